"""The policy's prompt-token limit, applied inside the Ray Data pipeline."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

# Imported here, when a Ray worker unpickles the pipeline, rather than lazily inside the UDF:
# Ray Data may run UDFs on a thread, and a first import of torch racing with another import
# fails half-initialized ("partially initialized module 'torch._dynamo'").
import torch  # noqa: F401
import torch._dynamo  # noqa: F401
from transformers import AutoTokenizer

from rlaf_ray.config import ModelSettings


@functools.lru_cache(maxsize=4)
def _tokenizer(name_or_path: str, trust_remote_code: bool):
    return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)


def limit_prompt_tokens(batch: pd.DataFrame, model: ModelSettings) -> pd.DataFrame:
    """Count each prompt's policy tokens; truncate the too-long ones from the left (keeping the
    end, where the instruction sits) and flag them in ``too_long``."""
    tokenizer = _tokenizer(model.name_or_path, model.trust_remote_code)
    ids = tokenizer(list(batch["prompt"]), add_special_tokens=True)["input_ids"]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    too_long = lengths > model.max_prompt_length
    room = max(1, model.max_prompt_length - tokenizer.num_special_tokens_to_add())
    prompts = [tokenizer.decode(x[-room:], skip_special_tokens=True) if long else p
               for p, x, long in zip(batch["prompt"], ids, too_long)]
    return batch.assign(prompt=prompts, prompt_tokens=np.minimum(lengths, model.max_prompt_length),
                        too_long=too_long)
