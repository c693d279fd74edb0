"""DialogSum-shaped prompts (``id``, ``dialogue``, ``summary``, ``topic``): summarize a dialogue.

The seeds' recipe: keep dialogues of ``min_chars``..``max_chars`` characters and wrap them in the
summarization template.
"""

from __future__ import annotations

import pandas as pd
import ray.data

from rlaf_ray.config import DataConfig
from rlaf_ray.data.source import PromptSource, read_rows


def _required(cfg: DataConfig) -> list[str]:
    return [cfg.text_column]


def to_prompts(batch: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    text = batch[cfg.text_column].astype(str)
    keep = text.str.len().between(cfg.min_chars, cfg.max_chars)
    kept = batch[keep]
    prompts = [cfg.template.format(**{**row, cfg.text_column: t})
               for row, t in zip(kept.to_dict("records"), text[keep])]
    ids = kept["id"].astype(str) if "id" in kept else kept.index.astype(str)
    return pd.DataFrame({"id": list(ids), "prompt": prompts})


def build(cfg: DataConfig) -> ray.data.Dataset:
    ds = read_rows(cfg).map_batches(to_prompts, fn_kwargs={"cfg": cfg}, batch_format="pandas",
                                    num_cpus=cfg.num_cpus_per_task)
    if cfg.max_rows is not None:
        ds = ds.limit(cfg.max_rows)
    return ds


SOURCE = PromptSource(name="dialogsum", required_columns=_required, build=build)
