"""Using a trained adapter outside training: merge it into its base model, or generate with it.

``merge`` writes a standard ``from_pretrained`` directory (weights as safetensors, with the
tokenizer); ``generate`` samples with the same controls as training (``generation`` section).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from rlaf_ray.config import ConfigError, GenerationSettings, ModelSettings
from rlaf_ray.devices import default_device
from rlaf_ray.models.policy import (
    DTYPES,
    encode_prompts,
    eos_token_id,
    generated_tokens,
    is_seq2seq,
    load_base_model,
    load_tokenizer,
)
from rlaf_ray.roles.rollout import hf_generation_config, sample_max_new_tokens


def check_adapter(adapter: str) -> None:
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ConfigError([f"--adapter {adapter!r}: no adapter_config.json in it; expected a PEFT adapter directory"])


def adapter_base(adapter: str) -> str:
    """The base model an adapter was trained on, as its own ``adapter_config.json`` names it."""
    from peft import PeftConfig

    check_adapter(adapter)
    base = PeftConfig.from_pretrained(adapter).base_model_name_or_path
    if not base:
        raise ConfigError([f"--adapter {adapter!r}: its adapter_config.json names no base model; give --base"])
    return base


def load_with_adapter(model: ModelSettings, adapter: str | None, device: torch.device | str = "cpu"):
    if adapter is not None:
        check_adapter(adapter)  # before the (slow) base model loads
    net = load_base_model(model, device)
    if adapter is None:
        return net
    from peft import PeftModel

    return PeftModel.from_pretrained(net, adapter)


def merge(model: ModelSettings, adapter: str, out_dir: Path) -> Path:
    """Fold the LoRA weights into the base (``merge_and_unload``) and save model + tokenizer."""
    if model.dtype not in DTYPES:
        raise ConfigError([f"model.dtype: {model.dtype!r}; merge into a float base (fp32, bf16 or fp16): "
                           "LoRA weights folded into quantized weights would be rounded away"])
    merged = load_with_adapter(model, adapter).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(model).save_pretrained(out_dir)
    return out_dir


@torch.no_grad()
def generate(model: ModelSettings, adapter: str | None, prompts: Sequence[str], generation: GenerationSettings,
             seed: int = 0, batch_size: int = 8) -> list[str]:
    """One sampled continuation per prompt, with the training sampling controls."""
    device = default_device()
    tokenizer = load_tokenizer(model)
    net = load_with_adapter(model, adapter, device).eval()
    seq2seq = is_seq2seq(model)
    eos = eos_token_id(generation, tokenizer)
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        enc = encode_prompts(tokenizer, chunk, model, device)
        config = hf_generation_config(generation, sample_max_new_tokens(generation.max_new_tokens, seed + start),
                                      eos, tokenizer.pad_token_id)
        torch.manual_seed(seed + start)
        ids = generated_tokens(net.generate(**enc, generation_config=config), enc["input_ids"].shape[1], seq2seq)
        out.extend(tokenizer.batch_decode(ids, skip_special_tokens=True))
    return out


def read_prompts(path: str) -> list[str]:
    """A text file (one prompt per line) or JSONL with a ``prompt`` field."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"--prompts {path!r}: file not found"])
    lines = [line for line in p.read_text().splitlines() if line.strip()]
    if p.suffix == ".jsonl":
        rows = [json.loads(line) for line in lines]
        if any("prompt" not in r for r in rows):
            raise ConfigError([f"--prompts {path!r}: every JSONL row needs a 'prompt' field"])
        return [str(r["prompt"]) for r in rows]
    return lines
