"""Policy loading: tokenizer, base causal LM, LoRA adapter (peft) and the scalar value head."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from rlaf_ray.config import GenerationConfig as GenerationSettings
from rlaf_ray.config import LoraSettings, ModelConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_tokenizer(model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """Tokenizer set up for batched generation in a causal LM: left padding, left truncation."""
    tokenizer = AutoTokenizer.from_pretrained(
        model_cfg.name_or_path, trust_remote_code=model_cfg.trust_remote_code
    )
    tokenizer.padding_side = "left"
    # Long prompts keep their end: that is where the instruction and the text to answer sit.
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def eos_token_id(generation: GenerationSettings, tokenizer: PreTrainedTokenizerBase) -> int:
    """The EOS id that ends responses: the configured one, else the tokenizer's."""
    return generation.eos_token_id if generation.eos_token_id is not None else tokenizer.eos_token_id


def load_base_model(model_cfg: ModelConfig) -> nn.Module:
    return AutoModelForCausalLM.from_pretrained(
        model_cfg.name_or_path,
        dtype=DTYPES[model_cfg.dtype],
        trust_remote_code=model_cfg.trust_remote_code,
        use_safetensors=True,
    )


def lora_config(lora: LoraSettings) -> LoraConfig:
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias=lora.bias,
        # None lets peft pick the usual modules for the architecture.
        target_modules=lora.target_modules,
    )


def load_policy(model_cfg: ModelConfig, lora: LoraSettings) -> PeftModel:
    """Base model with a fresh LoRA adapter; only the adapter is trainable."""
    return get_peft_model(load_base_model(model_cfg), lora_config(lora))


class PolicyWithValueHead(nn.Module):
    """A LoRA policy plus a scalar value head on the last hidden state.

    One module so that a single DDP wrapper all-reduces the gradients of both.
    """

    def __init__(self, policy: PeftModel):
        super().__init__()
        self.policy = policy
        hidden_size = policy.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden_size, 1)
        # Small initial values: the first advantages come mostly from the rewards.
        nn.init.normal_(self.value_head.weight, std=1.0 / (hidden_size + 1))
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1].to(self.value_head.weight.dtype)
        return out.logits, self.value_head(hidden).squeeze(-1)


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
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return trainable, total
