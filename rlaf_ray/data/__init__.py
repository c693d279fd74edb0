"""Prompt sources. Each source turns a :class:`~rlaf_ray.config.DataConfig` into a Ray Data
dataset with a ``prompt`` column; adding a dataset is one module plus one line in ``SOURCES``."""

from __future__ import annotations

import difflib

import ray.data

from rlaf_ray.config import ConfigError, DataConfig
from rlaf_ray.data import dialogsum
from rlaf_ray.data.source import PromptSource

SOURCES: dict[str, PromptSource] = {
    "dialogsum": dialogsum.SOURCE,
}


def get_source(cfg: DataConfig) -> PromptSource:
    if cfg.source not in SOURCES:
        close = difflib.get_close_matches(cfg.source, list(SOURCES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError([f"data.source: unknown source {cfg.source!r}{hint}; available: {', '.join(SOURCES)}"])
    return SOURCES[cfg.source]


def check_data(cfg: DataConfig) -> None:
    """Cheap checks before any actor starts: the source exists, the file and its columns are there."""
    get_source(cfg).check(cfg)


def build_prompt_dataset(cfg: DataConfig) -> ray.data.Dataset:
    return get_source(cfg).build(cfg)
