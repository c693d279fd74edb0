"""The shape every prompt source has, and the reading of local files shared by all of them."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq
import ray.data

from rlaf_ray.config import ConfigError, DataConfig

HUB_PREFIX = "hub:"
LOCAL_FORMATS = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class PromptSource:
    name: str
    # Columns the rows must have, given the config (e.g. the text column).
    required_columns: Callable[[DataConfig], list[str]]
    # Ray Data pipeline from raw rows to rows with a ``prompt`` column.
    build: Callable[[DataConfig], ray.data.Dataset]

    def check(self, cfg: DataConfig) -> None:
        if cfg.path.startswith(HUB_PREFIX):
            return  # the hub is checked when it is read: it may be unreachable from the driver
        columns = local_columns(cfg.path)
        needed = self.required_columns(cfg) + template_fields(cfg.template)
        missing = [c for c in needed if c not in columns]
        if missing:
            raise ConfigError([f"data.path {cfg.path!r}: missing column {missing[0]!r}; "
                               f"columns present: {', '.join(columns)}"])


def template_fields(template: str) -> list[str]:
    """Column names a ``{column}`` template refers to."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as err:
        raise ConfigError([f"data.template: not a valid {{column}} template ({err})"])


def local_columns(path: str) -> list[str]:
    """Column names of a local JSONL/Parquet file, read from its first row or its schema."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"data.path {path!r}: file not found"])
    if p.suffix not in LOCAL_FORMATS:
        raise ConfigError([f"data.path {path!r}: expected a {', '.join(LOCAL_FORMATS)} file"])
    if p.suffix == ".parquet":
        return list(pq.read_schema(p).names)
    with p.open() as f:
        for line in f:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ConfigError([f"data.path {path!r}: first row is not JSON ({err})"])
                if not isinstance(row, dict):
                    raise ConfigError([f"data.path {path!r}: rows must be JSON objects"])
                return list(row)
    raise ConfigError([f"data.path {path!r}: file is empty"])


def read_rows(cfg: DataConfig) -> ray.data.Dataset:
    """Rows of the configured file (or hub dataset ``hub:name[:split]``) as a Ray Data dataset."""
    remote_args = {"num_cpus": cfg.num_cpus_per_task}
    if cfg.path.startswith(HUB_PREFIX):
        import datasets  # only needed for hub data

        name, _, split = cfg.path[len(HUB_PREFIX):].partition(":")
        return ray.data.from_huggingface(datasets.load_dataset(name, split=split or "train"))
    if cfg.path.endswith(".parquet"):
        return ray.data.read_parquet(cfg.path, ray_remote_args=remote_args)
    return ray.data.read_json(cfg.path, lines=True, ray_remote_args=remote_args)
