"""DIALOCONAN: multi-turn dialogues alternating hate speech (HS) and counter-narratives (CN).

One row per turn: ``dialogue_id``, ``turn_id``, ``text``, ``type`` (HS/CN), ``TARGET``. Every
hate-speech turn that a counter-narrative answers becomes one prompt: the dialogue's turns up
to and including it, rendered into the template, with the counter-narrative as the reference
reply (what the supervised baseline learns). Turns are grouped per dialogue with a Ray Data
``groupby``, so a dialogue split across files or blocks is still put together.
"""

from __future__ import annotations

import pandas as pd
import ray.data
from ray.data.context import ShuffleStrategy

from rlaf_ray.config import DataSettings
from rlaf_ray.data.source import PromptSource, sort_rows
from rlaf_ray.data.text import within_length

SPEAKERS = {"HS": "Speaker A", "CN": "Speaker B"}
TEMPLATE = ("Reply to the last message of this conversation with a respectful, factual "
            "counter-argument.\n\n{dialogue}\nSpeaker B:")
TEMPLATE_FIELDS = ("dialogue", "target")


def _required(cfg: DataSettings) -> list[str]:
    return ["dialogue_id", "turn_id", SOURCE.text_column_for(cfg), "type", "TARGET"]


def _dialogue_to_prompts(turns: pd.DataFrame, cfg: DataSettings) -> pd.DataFrame:
    column, template = SOURCE.text_column_for(cfg), SOURCE.template_for(cfg)
    turns = turns.sort_values("turn_id")
    texts, kinds = list(turns[column].astype(str)), list(turns["type"].astype(str).str.upper())
    rows = {"id": [], "prompt": [], "reference": []}
    for i in range(len(turns) - 1):
        if kinds[i] != "HS" or kinds[i + 1] != "CN" or not within_length(texts[i], cfg):
            continue
        history = "\n".join(f"{SPEAKERS.get(k, k)}: {t}" for k, t in zip(kinds[: i + 1], texts[: i + 1]))
        rows["id"].append(f"{turns['dialogue_id'].iloc[0]}-{turns['turn_id'].iloc[i]}")
        rows["prompt"].append(template.format(dialogue=history, target=str(turns["TARGET"].iloc[i])))
        rows["reference"].append(texts[i + 1])
    return pd.DataFrame(rows, columns=["id", "prompt", "reference"])


def _dialogues_to_prompts(turns: pd.DataFrame, cfg: DataSettings) -> pd.DataFrame:
    """Every dialogue of a split that fits one block, in one task."""
    parts = [_dialogue_to_prompts(group, cfg) for _, group in turns.groupby("dialogue_id", sort=False)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id", "prompt", "reference"])


def to_prompts(ds: ray.data.Dataset, cfg: DataSettings, in_one_task: bool = False) -> ray.data.Dataset:
    if in_one_task:
        # A small split: group in one task instead of Ray Data's distributed groupby (seconds of
        # shuffle tasks even for a few dialogues). The same prompts, sorted the same way below.
        prompts = ds.repartition(1).map_batches(_dialogues_to_prompts, fn_kwargs={"cfg": cfg}, batch_size=None,
                                                batch_format="pandas", num_cpus=cfg.num_cpus_per_task)
    else:
        # The default hash shuffle starts aggregator actors sized for big clusters: on a small
        # machine it spends over a minute waiting for CPUs. The sort-based shuffle runs as tasks.
        ds.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
        prompts = ds.groupby("dialogue_id").map_groups(
            _dialogue_to_prompts, fn_kwargs={"cfg": cfg}, batch_format="pandas",
            num_cpus=cfg.num_cpus_per_task)
    # Groups come out in an order that depends on sampled partition boundaries: fix it.
    return sort_rows(prompts, "id", in_one_task, cfg.num_cpus_per_task)


SOURCE = PromptSource(name="dialoconan", hub_name=None, text_column="text", template=TEMPLATE,
                      required_columns=_required, to_prompts=to_prompts)
