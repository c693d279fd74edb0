"""The user's own JSONL/CSV/Parquet files: a text column, an optional ``{column}`` template and
an optional reference-reply column."""

from __future__ import annotations

import pandas as pd

from rlaf_ray.config import DataSettings
from rlaf_ray.data.source import PromptSource, per_batch, template_fields
from rlaf_ray.data.text import length_mask


def _template(cfg: DataSettings) -> str:
    return cfg.template or f"{{{SOURCE.text_column_for(cfg)}}}"  # default: the text as is


def _required(cfg: DataSettings) -> list[str]:
    extra = [cfg.reference_column] if cfg.reference_column else []
    return [SOURCE.text_column_for(cfg), *template_fields(_template(cfg)), *extra]


def _batch_to_prompts(batch: pd.DataFrame, cfg: DataSettings) -> pd.DataFrame:
    column = SOURCE.text_column_for(cfg)
    template = _template(cfg)
    kept = batch[length_mask(batch[column], cfg)]
    prompts = [template.format(**row) for row in kept.to_dict("records")]
    ids = kept["id"].astype(str) if "id" in kept else kept.index.astype(str)
    reference = (kept[cfg.reference_column].astype(str) if cfg.reference_column
                 else pd.Series([None] * len(kept), index=kept.index))
    return pd.DataFrame({"id": list(ids), "prompt": prompts, "reference": list(reference)})



SOURCE = PromptSource(name="files", hub_name=None, text_column="text", template="{text}",
                      required_columns=_required, to_prompts=per_batch(_batch_to_prompts))
