"""Policy loading: tokenizer, base LM (causal or seq2seq; float or bitsandbytes-quantized), LoRA
adapter (peft), the scalar value head, and the prompt encoding every generating role shares."""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import platform
from pathlib import Path
from typing import Sequence

import torch
from peft import (
    EvaConfig,
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    initialize_lora_eva_weights,
    prepare_model_for_kbit_training,
    set_peft_model_state_dict,
)
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BatchEncoding,
    PreTrainedTokenizerBase,
)

from rlaf_ray.config import (
    QUANTIZED_DTYPES,
    ConfigError,
    GenerationSettings,
    LoraSettings,
    ModelSettings,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=64)
def _is_encoder_decoder(name_or_path: str, trust_remote_code: bool) -> bool:
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    return bool(getattr(config, "is_encoder_decoder", False))


def is_seq2seq(model_cfg: ModelSettings) -> bool:
    """Encoder-decoder (T5) or causal, read from the model's own config: no flag to get wrong."""
    return _is_encoder_decoder(model_cfg.name_or_path, model_cfg.trust_remote_code)


def auto_class(model_cfg: ModelSettings):
    return AutoModelForSeq2SeqLM if is_seq2seq(model_cfg) else AutoModelForCausalLM


def load_tokenizer(model_cfg: ModelSettings) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(
        model_cfg.name_or_path, trust_remote_code=model_cfg.trust_remote_code
    )
    # A causal LM continues its prompt, so batched prompts are left-padded; an encoder reads the
    # whole prompt under its mask, and T5 was trained right-padded.
    tokenizer.padding_side = "right" if is_seq2seq(model_cfg) else "left"
    # Long prompts keep their end: that is where the instruction and the text to answer sit.
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def eos_token_id(generation: GenerationSettings, tokenizer: PreTrainedTokenizerBase) -> int:
    """The id that ends responses: ``generation.eos_token_id``, ``generation.eos_token`` (text,
    e.g. a chat template's end-of-turn token), else the tokenizer's EOS."""
    if generation.eos_token_id is not None:
        return generation.eos_token_id
    if generation.eos_token is not None:
        vocab = tokenizer.get_vocab()
        if generation.eos_token not in vocab:
            raise ConfigError([f"generation.eos_token: {generation.eos_token!r} is not a token of the "
                               f"policy's tokenizer; expected one vocabulary token such as "
                               f"{tokenizer.eos_token!r}"])
        return vocab[generation.eos_token]
    return tokenizer.eos_token_id


def format_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], chat: bool) -> list[str]:
    """Prompts as given, or each wrapped as a user turn of the tokenizer's chat template."""
    if not chat:
        return list(prompts)
    if not tokenizer.chat_template:
        raise ConfigError([f"model.chat_template: the tokenizer of {tokenizer.name_or_path!r} has no chat "
                           "template; set model.chat_template=false"])
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], model_cfg: ModelSettings,
                   device: torch.device | str = "cpu") -> BatchEncoding:
    """One padded batch of prompts, as every generating role (rollout, meter, generate) feeds it."""
    texts = format_prompts(tokenizer, prompts, model_cfg.chat_template)
    # A chat template writes its own special tokens (BOS included): do not add them twice.
    return tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                     max_length=model_cfg.max_prompt_length,
                     add_special_tokens=not model_cfg.chat_template).to(device)


def cut_at_eos(tokens: list[int], eos_token_id: int | None) -> tuple[list[int], bool]:
    """A generated row up to and including its first EOS (kept: the policy is rewarded for
    choosing to stop; what follows is padding), and whether it ended."""
    if eos_token_id in tokens:
        return tokens[:tokens.index(eos_token_id) + 1], True
    return tokens, False


def generated_tokens(output: torch.Tensor, prompt_width: int, seq2seq: bool) -> torch.Tensor:
    """The new tokens of ``generate``'s output: a causal LM repeats the (padded) prompt first, a
    seq2seq decoder starts with its decoder-start token."""
    return output[:, 1:] if seq2seq else output[:, prompt_width:]


# ----------------------------------------------------------------------------------------------
# Precision


def check_precision(model_cfg: ModelSettings, device: torch.device) -> None:
    """Raise a one-line ConfigError if ``device`` cannot run ``model.dtype``, saying why."""
    dtype = model_cfg.dtype
    if dtype in QUANTIZED_DTYPES:
        # Installed? Asked of the package's metadata, not by importing it: a driver checks this
        # without importing bitsandbytes (rlaf_ray.worker_setup), and the roles import it anyway.
        try:
            importlib.metadata.version("bitsandbytes")
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError([f"model.dtype: {dtype!r} needs the bitsandbytes package; "
                               "pip install bitsandbytes, or use fp32/bf16/fp16"]) from None
        if device.type == "cpu" and platform.machine().lower() in ("x86_64", "amd64"):
            capability = torch.backends.cpu.get_cpu_capability()
            if "AVX2" not in capability and "AVX512" not in capability:
                raise ConfigError([f"model.dtype: {dtype!r} on CPU needs bitsandbytes' AVX2 kernels, and this "
                                   f"CPU reports {capability!r}; use fp32/bf16, or give the roles a GPU "
                                   "(resources.<role>.num_gpus)"])
    bf16_needed = dtype == "bf16" or (dtype == "4bit" and model_cfg.bnb_4bit_compute_dtype == "bf16")
    if bf16_needed and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        field = "model.dtype" if dtype == "bf16" else "model.bnb_4bit_compute_dtype"
        raise ConfigError([f"{field}: 'bf16' is not supported by {torch.cuda.get_device_name(device)}; "
                           "use fp16 or fp32"])


def quantization_config(model_cfg: ModelSettings):
    """bitsandbytes settings for an 8-bit or 4-bit base, None for a float base."""
    if model_cfg.dtype not in QUANTIZED_DTYPES:
        return None
    from transformers import BitsAndBytesConfig

    if model_cfg.dtype == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_cfg.bnb_4bit_quant_type,
        bnb_4bit_compute_dtype=DTYPES[model_cfg.bnb_4bit_compute_dtype],
        bnb_4bit_use_double_quant=model_cfg.bnb_4bit_use_double_quant,
    )


def _placed(device: torch.device | str | None) -> torch.device:
    device = torch.device(device or "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def load_base_model(model_cfg: ModelSettings, device: torch.device | str | None = None) -> nn.Module:
    """The base LM on ``device`` (default CPU), weights from safetensors only."""
    device = _placed(device)
    check_precision(model_cfg, device)
    kwargs = {"trust_remote_code": model_cfg.trust_remote_code, "use_safetensors": True}
    quantization = quantization_config(model_cfg)
    if quantization is None:
        kwargs["dtype"] = DTYPES[model_cfg.dtype]
    else:
        # Quantized layers are placed while loading; such a model cannot be moved with .to().
        # The layers left in float (norms, embeddings) use the compute dtype.
        compute = model_cfg.bnb_4bit_compute_dtype if model_cfg.dtype == "4bit" else (
            "fp16" if device.type == "cuda" else "fp32")
        kwargs.update(quantization_config=quantization, device_map={"": str(device)}, dtype=DTYPES[compute])
    model = auto_class(model_cfg).from_pretrained(model_cfg.name_or_path, **kwargs)
    return model if quantization is not None else model.to(device)


def lora_config(lora: LoraSettings, seq2seq: bool = False) -> LoraConfig:
    return LoraConfig(
        task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias=lora.bias,
        # None lets peft pick the usual modules for the architecture.
        target_modules=lora.target_modules,
    )


def keep_4bit_layers_differentiable(model: nn.Module) -> None:
    """On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit layer's weights for inference the
    first time it runs in eval mode without gradients (the learner's old log-probs), and from then
    on computes it with a kernel that has no backward: no gradient reaches any LoRA layer below it
    and the adapter silently stops learning. A learner's layers never take that path."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def load_policy(model_cfg: ModelSettings, lora: LoraSettings, device: torch.device | str | None = None,
                for_training: bool = False) -> PeftModel:
    """Base model with a LoRA adapter (fresh, or ``lora.init_from``); only the adapter trains."""
    base = load_base_model(model_cfg, device)
    if for_training and model_cfg.dtype == "4bit":
        keep_4bit_layers_differentiable(base)
    if for_training and model_cfg.dtype in QUANTIZED_DTYPES:
        # The QLoRA recipe: norms and embeddings in float32, inputs that carry gradients.
        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=model_cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif for_training and model_cfg.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    if lora.init_from is not None:
        return PeftModel.from_pretrained(base, lora.init_from, is_trainable=True)
    return get_peft_model(base, lora_config(lora, is_seq2seq(model_cfg)))


# EVA's prompts go through the policy in batches of this many (activations only, no gradients).
EVA_BATCH = 32


def init_eva(policy: PeftModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
             model_cfg: ModelSettings) -> None:
    """``lora.init: eva``: each adapted layer's A becomes the top-r right-singular vectors of that
    layer's inputs over ``prompts`` (peft's EVA, its SVD seeded: the same A for every run on the same
    prompts); B stays 0, so the policy still equals its base, which the reference relies on. Ranks
    are not redistributed between layers (rho 1): every layer keeps lora.r, as configured."""
    config = policy.peft_config["default"]
    config.init_lora_weights = "eva"  # peft's own check; saved with the adapter, it says how A began
    config.eva_config = EvaConfig(rho=1.0, use_label_mask=False)
    batches = [dict(encode_prompts(tokenizer, prompts[i:i + EVA_BATCH], model_cfg, policy.device))
               for i in range(0, len(prompts), EVA_BATCH)]
    initialize_lora_eva_weights(policy, batches, show_progress_bar=False, gather_distributed_inputs=False)


def check_init_adapter(lora: LoraSettings) -> None:
    if lora.init_from is not None and not (Path(lora.init_from) / "adapter_config.json").is_file():
        raise ConfigError([f"lora.init_from: {lora.init_from!r} has no adapter_config.json; expected a PEFT "
                           "adapter directory such as results/<run>/final/adapter"])


class PolicyWithValueHead(nn.Module):
    """A LoRA policy plus a scalar value head on the last (decoder) hidden state.

    One module so that a single DDP wrapper all-reduces the gradients of both. ``forward`` takes
    the model inputs a ``RolloutBatch`` carries: ids, mask and positions for a causal LM; encoder
    ids and mask plus decoder ids and mask for a seq2seq LM.

    ``critic="detached"`` (``ppo.critic``): the head reads the hidden state without gradient, so
    the value loss trains the head alone and cannot rewrite the policy's adapter; ``"shared"``:
    value-loss gradients flow into the adapter too; ``"none"`` (critic-free estimators): no value
    head at all, and ``forward`` returns ``None`` for the values.
    """

    def __init__(self, policy: PeftModel, critic: str = "detached"):
        super().__init__()
        if critic not in ("detached", "shared", "none"):
            raise ValueError(f"critic: expected 'detached', 'shared' or 'none', got {critic!r}")
        self.policy = policy
        self.detach_critic = critic == "detached"
        self.seq2seq = bool(policy.config.is_encoder_decoder)
        # Architectures with ALiBi (Bloom) take no position ids: they read positions off the mask.
        base_forward = policy.get_base_model().forward
        self.takes_position_ids = "position_ids" in inspect.signature(base_forward).parameters
        self.value_head = None
        if critic != "none":
            hidden_size = policy.config.get_text_config().hidden_size
            self.value_head = nn.Linear(hidden_size, 1)
            # Small initial values: the first advantages come mostly from the rewards.
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden_size + 1))
            nn.init.zeros_(self.value_head.bias)

    @property
    def decoder_start_token_id(self) -> int | None:
        """What ``collate`` puts before a seq2seq response; None selects the causal layout."""
        return self.policy.config.decoder_start_token_id if self.seq2seq else None

    def forward(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.takes_position_ids:
            inputs.pop("position_ids", None)
        if self.value_head is None:
            return self.policy(**inputs, use_cache=False).logits, None
        out = self.policy(**inputs, output_hidden_states=True, use_cache=False)
        hidden = (out.decoder_hidden_states if self.seq2seq else out.hidden_states)[-1]
        if self.detach_critic:
            hidden = hidden.detach()
        return out.logits, self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)


def learner_model(model_cfg: ModelSettings, lora: LoraSettings, critic: str,
                  device: torch.device | str | None = None) -> PolicyWithValueHead:
    """What a learner trains: the LoRA policy with dropout off (old log-probs, reference and
    updates then see the same network) and, unless ``critic`` is ``"none"``, the value head on
    the policy's device (a quantized policy cannot be moved after loading; the head can)."""
    from trl.trainer.utils import disable_dropout_in_model

    policy = load_policy(model_cfg, lora, device, for_training=True)
    disable_dropout_in_model(policy)
    inner = PolicyWithValueHead(policy, critic=critic)
    if inner.value_head is not None:
        inner.value_head.to(policy.device)
    return inner


def adapter_state_dict(policy: PeftModel) -> dict[str, torch.Tensor]:
    """The LoRA tensors only (MBs, not GBs), detached on CPU, ready for the object store."""
    return {k: v.detach().to("cpu").clone() for k, v in get_peft_model_state_dict(policy).items()}


def load_adapter_state(policy: PeftModel, state: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(policy, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"adapter state: {len(unexpected)} tensors do not belong to this model, "
                         f"e.g. {unexpected[0]!r}")


def trainable_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a 4-bit weight packs two values per stored byte."""
    trainable = total = 0
    for p in module.parameters():
        n = p.numel() * (2 if p.__class__.__name__ == "Params4bit" else 1)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
