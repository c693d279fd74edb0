"""Prompt datasets as Ray Data pipelines: sources, splits, caps, token limits.

``load_split(data, model, "train")`` reads one split of the configured source (a local file or
the dataset hub), builds ``id``/``prompt``/``reference`` rows, carves seeded held-out splits if
asked, shuffles with the seed, caps the rows and applies the policy's prompt-token limit. The
pipeline streams: nothing holds the whole dataset in one process. By default its result is kept
in Ray's object store (``data.cache_in_object_store``), so that epochs do not read, shuffle and
tokenize again. Adding a source is one module plus one line in ``SOURCES``.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import ray.data

from rlaf_ray.config import ConfigError, DataSettings, ModelSettings, is_local_path
from rlaf_ray.data import dialoconan, dialogsum, files, real_toxicity_prompts
from rlaf_ray.data.source import (
    PromptSource,
    check_columns,
    file_for_split,
    fits_one_block,
    read_rows,
    sort_rows,
)
from rlaf_ray.data.tokens import limit_prompt_tokens

SOURCES: dict[str, PromptSource] = {
    source.name: source
    for source in (dialogsum.SOURCE, real_toxicity_prompts.SOURCE, dialoconan.SOURCE, files.SOURCE)
}


def get_source(cfg: DataSettings) -> PromptSource:
    if cfg.source not in SOURCES:
        close = difflib.get_close_matches(cfg.source, list(SOURCES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError([f"data.source: unknown source {cfg.source!r}{hint}; available: {', '.join(SOURCES)}"])
    return SOURCES[cfg.source]


def carved(cfg: DataSettings) -> bool:
    """Held-out splits come from a seeded share of the train split, not the dataset's own."""
    return cfg.eval_fraction > 0 or cfg.test_fraction > 0


def raw_split_name(cfg: DataSettings, split: str) -> str:
    """The dataset's own split that holds ``split``'s rows."""
    own = "train" if carved(cfg) else split
    location = get_source(cfg).location(cfg)
    if own != "train" and is_local_path(location) and "{split}" not in location:
        raise ConfigError([f"data.path {location!r}: one file holds only the train split; for {split!r} "
                           "put {split} in the file name or set data.eval_fraction/test_fraction"])
    if own not in cfg.splits:
        raise ConfigError([f"data.splits: no dataset split named for {split!r}; set data.splits.{split} "
                           "or data.eval_fraction/test_fraction to carve one from train"])
    return cfg.splits[own]


def check_data(cfg: DataSettings, splits: tuple[str, ...] = ("train",)) -> None:
    """Cheap checks before any actor starts: the source exists, the files and columns are there."""
    source = get_source(cfg)
    location = source.location(cfg)
    if not is_local_path(location):
        return  # hub data is checked when read: the driver may be the only place that reaches it
    for split in splits:
        check_columns(file_for_split(location, raw_split_name(cfg, split)), source.required_columns(cfg))


# ----------------------------------------------------------------------------------------------
# The pipeline


def _unit_hash(seed: int, text: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _keep_carved(batch: pd.DataFrame, cfg: DataSettings, split: str) -> pd.DataFrame:
    """Seeded split by a hash of the prompt: stable across runs and machines, and the same
    prompt never lands in two splits."""
    u = batch["prompt"].map(lambda p: _unit_hash(cfg.seed, p))
    low, high = {"eval": (0.0, cfg.eval_fraction),
                 "test": (cfg.eval_fraction, cfg.eval_fraction + cfg.test_fraction),
                 "train": (cfg.eval_fraction + cfg.test_fraction, 1.0)}[split]
    return batch[(u >= low) & (u < high)]


def _drop_too_long(batch: pd.DataFrame) -> pd.DataFrame:
    return batch[~batch["too_long"].astype(bool)]


def _add_shuffle_key(batch: pd.DataFrame, seed: int) -> pd.DataFrame:
    keys = [_unit_hash(seed, f"shuffle\x00{i}\x00{p}") for i, p in zip(batch["id"], batch["prompt"])]
    return batch.assign(shuffle_key=keys)


@dataclass
class PromptSplit:
    name: str
    # Prompts ready for use: id, prompt, reference, prompt_tokens, too_long (dropped if configured).
    dataset: ray.data.Dataset
    # Before the too-long drop, for counting.
    flagged: ray.data.Dataset
    config: DataSettings

    def stats(self) -> dict[str, int]:
        """One streaming pass: prompts kept, truncated and dropped for the token limit."""
        rows = too_long = 0
        for batch in self.flagged.iter_batches(batch_size=4096, batch_format="numpy"):
            rows += len(batch["too_long"])
            too_long += int(np.sum(batch["too_long"]))
        dropped = too_long if self.config.too_long == "drop" else 0
        return {"rows": rows - dropped, "truncated": too_long - dropped, "dropped": dropped}


def load_split(cfg: DataSettings, model: ModelSettings, split: str = "train") -> PromptSplit:
    """One split as a Ray Data pipeline (see the module docstring for the steps)."""
    source = get_source(cfg)
    location = source.location(cfg)
    raw = read_rows(location, raw_split_name(cfg, split), cfg)
    # The same rows in the same order on every run (inherited by every stage below): caps,
    # held-out prompts, shard contents and resumed data positions depend on it.
    raw.context.execution_options.preserve_order = True
    in_one_task = fits_one_block(location, raw_split_name(cfg, split))
    ds = source.to_prompts(raw, cfg, in_one_task)
    remote = {"num_cpus": cfg.num_cpus_per_task}
    if carved(cfg):
        ds = ds.map_batches(_keep_carved, fn_kwargs={"cfg": cfg, "split": split},
                            batch_format="pandas", **remote)
    if cfg.shuffle:
        # A seeded shuffle that depends on the rows only, not on how they fall into blocks:
        # sort by a hash of (seed, id, prompt).
        keyed = ds.map_batches(_add_shuffle_key, fn_kwargs={"seed": cfg.seed}, batch_format="pandas", **remote)
        ds = sort_rows(keyed, "shuffle_key", in_one_task, cfg.num_cpus_per_task)
    if split in cfg.max_rows:
        ds = ds.limit(cfg.max_rows[split])
    flagged = ds.map_batches(limit_prompt_tokens, fn_kwargs={"model": model}, batch_format="pandas",
                             **remote)
    if cfg.cache_in_object_store:
        flagged = flagged.materialize()
    final = flagged
    if cfg.too_long == "drop":
        final = flagged.map_batches(_drop_too_long, batch_format="pandas", **remote)
        if cfg.cache_in_object_store:
            final = final.materialize()
    return PromptSplit(name=split, dataset=final, flagged=flagged, config=cfg)
