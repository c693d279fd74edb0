"""DialogSum (``knkarthick/dialogsum``: ``id``, ``dialogue``, ``summary``, ``topic``).

The seeds' recipe: keep dialogues of ``min_chars``..``max_chars`` characters and wrap them in the
summarization template; the human summary is the reference reply.
"""

from __future__ import annotations

import pandas as pd

from rlaf_ray.config import DataSettings
from rlaf_ray.data.source import PromptSource, per_batch, template_fields
from rlaf_ray.data.text import length_mask

TEMPLATE = "\nSummarize the following conversation.\n\n{dialogue}\n\nSummary:\n"


def _required(cfg: DataSettings) -> list[str]:
    return [SOURCE.text_column_for(cfg), *template_fields(SOURCE.template_for(cfg))]


def _batch_to_prompts(batch: pd.DataFrame, cfg: DataSettings) -> pd.DataFrame:
    column, template = SOURCE.text_column_for(cfg), SOURCE.template_for(cfg)
    kept = batch[length_mask(batch[column], cfg)]
    prompts = [template.format(**row) for row in kept.to_dict("records")]
    ids = kept["id"].astype(str) if "id" in kept else kept.index.astype(str)
    references = kept["summary"].astype(str) if "summary" in kept else [None] * len(kept)
    return pd.DataFrame({"id": list(ids), "prompt": prompts, "reference": list(references)})



SOURCE = PromptSource(name="dialogsum", hub_name="knkarthick/dialogsum", text_column="dialogue",
                      template=TEMPLATE, required_columns=_required, to_prompts=per_batch(_batch_to_prompts))
