"""The policy and its reward: model, LoRA adapter, sampling, reward classifier."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlaf_ray.config.fields import Number, Section

# The offline tiny models are named with this prefix; ``rlaf_ray.models.tiny`` builds them.
TINY_PREFIX = "tiny:"
QUANTIZED_DTYPES = ("8bit", "4bit")


class ModelSettings(Section):
    name_or_path: str = Field("TinyLlama/TinyLlama-1.1B-Chat-v1.0", description=(
        "Hub name, local directory, or tiny:llama for the offline tiny policy. Causal or seq2seq (T5) "
        "is read from the model's own config."))
    dtype: Literal["fp32", "bf16", "fp16", "8bit", "4bit"] = Field("fp32", description=(
        "Weights of the frozen base: a float type or a bitsandbytes quantization (QLoRA); adapter and "
        "value head stay fp32."))
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4bit only: the quantization type.")
    bnb_4bit_compute_dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "bf16", description="4bit only: the dtype of the matmuls.")
    bnb_4bit_use_double_quant: bool = Field(True, description="4bit only: quantize the quantization constants.")
    gradient_checkpointing: bool = Field(False, description=(
        "Recompute activations in the backward pass: less memory, about a third more learner time."))
    trust_remote_code: bool = Field(False, description="Run code shipped with the model (off unless you trust it).")
    max_prompt_length: int = Field(512, ge=1, description="Prompts longer than this (policy tokens) are cut "
                                                          "from the left (or dropped: data.too_long).")
    chat_template: bool = Field(False, description=(
        "Wrap each prompt as a user turn with the tokenizer's chat template; pair with "
        "generation.eos_token set to the template's end-of-turn token."))


class LoraSettings(Section):
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: Number = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")
    target_modules: list[str] | None = Field(None, description=(
        "Linear layers to adapt, by name; null: peft's default for the architecture."))
    init_from: str | None = Field(None, description=(
        "A saved PEFT adapter directory to continue from (its own r, alpha and targets apply)."))
    init: Literal["random", "eva"] = Field("random", description=(
        "How a new adapter's A matrices start (B starts at 0 either way, so the adapter starts as the base): "
        "random (peft's default, Kaiming-uniform: a random r-dimensional view of each layer's input, "
        "different for every seed); eva (Explained Variance Adaptation, Paischer et al. 2024, peft's "
        "init_lora_weights='eva'): the top-r principal directions of each layer's input over "
        "eva_prompts train prompts, the same for every seed."))
    # Measured (benchmarks/LEARNING.md): two sets of 128 of the offline world's 400 train prompts
    # gave different starts and runs as far apart as two seeds; all 400 gave one start and the best
    # runs. peft's incremental SVD stops early once a layer's directions settle (tau 0.99), so a
    # generous cap costs forward passes only where the directions are still moving.
    eva_prompts: int = Field(1024, ge=8, description=(
        "init=eva: at most this many train prompts (the split's first, in its fixed order; all of "
        "them when the split has fewer) feed the principal directions."))

    @model_validator(mode="after")
    def _targets_not_empty(self):
        if self.target_modules is not None and not self.target_modules:
            raise ValueError("target_modules: empty list; give module names or null for the default")
        return self

    @model_validator(mode="after")
    def _eva_starts_a_new_adapter(self):
        if self.init == "eva" and self.init_from is not None:
            raise ValueError(f"init: 'eva' initializes a new adapter, and init_from {self.init_from!r} continues a "
                             f"saved one; set init to random, or init_from to null")
        return self


class GenerationSettings(Section):
    """How rollouts sample; the learner scores log-probs under exactly these rules."""

    max_new_tokens: int | list[int] = Field(32, description=(
        "A fixed number, or [low, high] sampled once per batch (inclusive)."))
    min_new_tokens: int = Field(0, ge=0, description="EOS is not sampled before this many tokens.")
    temperature: Number = Field(1.0, gt=0.0, description="Sampling temperature (the learner divides logits by it).")
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens (0: all).")
    top_p: Number = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (1: all).")
    repetition_penalty: Number = Field(1.0, gt=0.0, description="Penalty on tokens already present (1: none).")
    eos_token_id: int | None = Field(None, description="The token that ends a response, by id.")
    eos_token: str | None = Field(None, description=(
        "The token that ends a response, by text (e.g. <|im_end|>); neither: the tokenizer's EOS."))

    @property
    def smallest_max_new_tokens(self) -> int:
        return self.max_new_tokens[0] if isinstance(self.max_new_tokens, list) else self.max_new_tokens

    @model_validator(mode="after")
    def _lengths_and_end_token(self):
        problems = []
        m = self.max_new_tokens
        if isinstance(m, list) and (len(m) != 2 or m[0] > m[1]):
            problems.append(f"max_new_tokens: expected an integer or [low, high] with low <= high, got {m!r}")
        elif self.smallest_max_new_tokens < 1:
            field = "max_new_tokens[0]" if isinstance(m, list) else "max_new_tokens"
            problems.append(f"{field}: {self.smallest_max_new_tokens!r} is out of range; allowed [1, inf]")
        elif self.min_new_tokens > self.smallest_max_new_tokens:
            problems.append(f"min_new_tokens: {self.min_new_tokens} exceeds the smallest max_new_tokens "
                            f"({self.smallest_max_new_tokens})")
        if self.eos_token_id is not None and self.eos_token is not None:
            problems.append("eos_token: set together with generation.eos_token_id; give one of them")
        if self.eos_token is not None and not self.eos_token:
            problems.append("eos_token: empty; give the end token's text or null")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class RewardSettings(Section):
    model_name_or_path: str = Field("facebook/roberta-hate-speech-dynabench-r4-target", description=(
        "Sequence classifier whose label score is the reward (hub name, directory or tiny:roberta-classifier)."))
    callable: str | None = Field(None, description=(
        "package.module:function(prompts, responses) -> list[float]; replaces the classifier."))
    label: str = Field("nothate", description="The rewarded label of the classifier.")
    score: Literal["logit", "probability"] = Field("logit", description="The label's logit or its probability.")
    input: Literal["response", "prompt_response"] = Field("response", description="What the classifier reads.")
    batch_size: int = Field(32, ge=1, description="Texts per classifier forward pass.")
    trust_remote_code: bool = Field(False, description="Run code shipped with the classifier.")

    @model_validator(mode="after")
    def _callable_importable(self):
        if self.callable is not None:
            problem = callable_problem(self.callable)
            if problem:
                raise ValueError(problem)
        return self


def callable_problem(spec: str) -> str | None:
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        return f"callable: {spec!r} must look like package.module:function"
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        return f"callable: cannot import module {module_name!r} ({err})"
    if not callable(getattr(module, attr, None)):
        return f"callable: module {module_name!r} has no function {attr!r}"
    return None
