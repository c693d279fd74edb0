"""RealToxicityPrompts (``allenai/real-toxicity-prompts``): sentence beginnings to continue.

Rows hold ``prompt`` and ``continuation`` as records with ``text`` and Perspective scores, and a
``challenging`` flag. The prompt text is used as is (the paper's protocol; a template with ``{prompt}`` may wrap it); options keep the
challenging subset only and filter on ``prompt.toxicity`` (rows without a score then drop out).
"""

from __future__ import annotations

import math

import pandas as pd

from rlaf_ray.config import DataSettings
from rlaf_ray.data.source import PromptSource, per_batch
from rlaf_ray.data.text import length_mask


def _required(cfg: DataSettings) -> list[str]:
    return ["prompt", *(["challenging"] if cfg.challenging_only else [])]


def _field(record, name: str):
    return record.get(name) if isinstance(record, dict) else None


def _batch_to_prompts(batch: pd.DataFrame, cfg: DataSettings) -> pd.DataFrame:
    text = batch["prompt"].map(lambda r: _field(r, "text"))
    keep = length_mask(text, cfg)
    if cfg.challenging_only:
        keep &= batch["challenging"].fillna(False).astype(bool)
    if cfg.min_prompt_toxicity is not None or cfg.max_prompt_toxicity is not None:
        tox = batch["prompt"].map(lambda r: _field(r, "toxicity")).map(
            lambda v: math.nan if v is None else float(v))
        keep &= tox.notna()
        if cfg.min_prompt_toxicity is not None:
            keep &= tox >= cfg.min_prompt_toxicity
        if cfg.max_prompt_toxicity is not None:
            keep &= tox <= cfg.max_prompt_toxicity
    kept = batch[keep]
    ids = (kept["filename"].astype(str) if "filename" in kept else kept.index.astype(str))
    reference = (kept["continuation"].map(lambda r: _field(r, "text")) if "continuation" in kept
                 else pd.Series([None] * len(kept), index=kept.index))
    template = SOURCE.template_for(cfg)
    prompts = [template.format(prompt=t) for t in text[keep].astype(str)]
    return pd.DataFrame({"id": list(ids), "prompt": prompts,
                         "reference": list(reference)})



SOURCE = PromptSource(name="real_toxicity_prompts", hub_name="allenai/real-toxicity-prompts",
                      text_column="prompt", template="{prompt}", required_columns=_required,
                      to_prompts=per_batch(_batch_to_prompts))
