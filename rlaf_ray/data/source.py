"""What every prompt source is, and the reading of raw rows shared by all of them.

A source turns raw rows (a local file or a dataset-hub split) into rows with the columns
``id``, ``prompt`` and ``reference`` (the reference reply, or ``None`` where the data has none).
"""

from __future__ import annotations

import csv
import json
import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow.parquet as pq
import ray.data

from rlaf_ray.config import (
    LOCAL_DATA_SUFFIXES,
    ConfigError,
    DataSettings,
    is_local_path,
)

PROMPT_COLUMNS = ("id", "prompt", "reference")


@dataclass(frozen=True)
class PromptSource:
    name: str
    # The dataset's usual hub name, read when data.path is null (None: not on the hub).
    hub_name: str | None
    # Defaults for data.text_column / data.template.
    text_column: str
    template: str
    # Raw columns the rows must have, given the config.
    required_columns: Callable[[DataSettings], list[str]]
    # Ray Data pipeline from raw rows to PROMPT_COLUMNS; the flag: the split fits one block, so
    # whole-split steps (grouping, sorting) may run in one task.
    to_prompts: Callable[[ray.data.Dataset, DataSettings, bool], ray.data.Dataset]

    def text_column_for(self, cfg: DataSettings) -> str:
        return cfg.text_column or self.text_column

    def template_for(self, cfg: DataSettings) -> str:
        return self.template if cfg.template is None else cfg.template

    def location(self, cfg: DataSettings) -> str:
        if cfg.path is not None:
            return cfg.path
        if self.hub_name is None:
            raise ConfigError([f"data.path: source {self.name!r} has no dataset-hub copy; "
                               "set data.path to a local file of its shape"])
        return self.hub_name


def per_batch(batch_fn: Callable[..., pd.DataFrame]) -> Callable[[ray.data.Dataset, DataSettings], ray.data.Dataset]:
    """A source's ``to_prompts``: ``batch_fn(batch, cfg)`` mapped over pandas batches, each task
    holding ``data.num_cpus_per_task`` CPUs."""
    def to_prompts(ds: ray.data.Dataset, cfg: DataSettings, in_one_task: bool = False) -> ray.data.Dataset:
        return ds.map_batches(batch_fn, fn_kwargs={"cfg": cfg}, batch_format="pandas",
                              num_cpus=cfg.num_cpus_per_task)

    return to_prompts


def template_fields(template: str) -> list[str]:
    """Names a ``{column}`` template refers to."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as err:
        raise ConfigError([f"data.template: not a valid {{column}} template ({err})"])


def file_for_split(path: str, split_name: str) -> str:
    return path.replace("{split}", split_name)


def local_columns(path: str) -> list[str]:
    """Column names of a local JSONL/JSON/CSV/Parquet file, from its schema, header or first row."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"data.path {path!r}: file not found"])
    suffix = p.suffix.lower()
    if suffix not in LOCAL_DATA_SUFFIXES:
        raise ConfigError([f"data.path {path!r}: expected a {', '.join(LOCAL_DATA_SUFFIXES)} file"])
    if suffix == ".parquet":
        return list(pq.read_schema(p).names)
    with p.open(newline="") as f:
        if suffix == ".csv":
            header = next(csv.reader(f), None)
            if not header:
                raise ConfigError([f"data.path {path!r}: file is empty"])
            return header
        columns = None
        # Every line, not only the first: a broken row found by a Ray Data task hours later is a
        # traceback from a worker; here it is one line naming the row (~1 s per 100k rows).
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError([f"data.path {path!r}: line {number} is not JSON ({err})"])
            if not isinstance(row, dict):
                raise ConfigError([f"data.path {path!r}: line {number} is not a JSON object; expected one object per line"])
            columns = columns or list(row)
    if columns is None:
        raise ConfigError([f"data.path {path!r}: file is empty"])
    return columns


def check_columns(path: str, needed: list[str]) -> None:
    columns = local_columns(path)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ConfigError([f"data.path {path!r}: missing column {missing[0]!r}; "
                           f"columns present: {', '.join(columns)}"])


def read_rows(location: str, split_name: str, cfg: DataSettings) -> ray.data.Dataset:
    """Raw rows of one split: a local file (``{split}`` filled in) or a dataset-hub split."""
    if not is_local_path(location):
        return read_hub(location, split_name)
    path = file_for_split(location, split_name)
    local_columns(path)  # a clear error for a missing or malformed file
    suffix = Path(path).suffix.lower()
    options = {"num_cpus": cfg.num_cpus_per_task, "override_num_blocks": block_count(path)}
    if suffix == ".parquet":
        return ray.data.read_parquet(path, **options)
    if suffix == ".csv":
        return ray.data.read_csv(path, **options)
    return ray.data.read_json(path, lines=True, **options)


# Bytes of a local file per Ray Data block. Ray Data splits a one-file read into blocks for
# parallelism; every block is a task in every later stage, and on a small machine each new task
# may start a worker process (seconds of imports). A prompt file of a few thousand rows is one
# block (and its whole-split steps run in one task: ``sort_rows``); larger files get one block
# per BLOCK_BYTES.
BLOCK_BYTES = 16 * 2**20


def block_count(path: str) -> int:
    return max(1, math.ceil(Path(path).stat().st_size / BLOCK_BYTES))


def read_hub(name: str, split_name: str) -> ray.data.Dataset:
    import datasets  # only needed for hub data

    try:
        hf = datasets.load_dataset(name, split=split_name)
    except Exception as err:  # noqa: BLE001 - offline, unknown name, unknown split: all one message
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError([f"data.path {name!r}: cannot load split {split_name!r} from the dataset hub "
                           f"({reason}); for offline use point data.path at a local "
                           f"{'/'.join(LOCAL_DATA_SUFFIXES)} file of the same shape"])
    # Arrow-backed and memory-mapped by `datasets`: Ray Data reads it in blocks.
    return ray.data.from_huggingface(hf)


def _sorted_batch(batch: pd.DataFrame, key: str) -> pd.DataFrame:
    return batch.sort_values(key, kind="stable")


def sort_rows(ds: ray.data.Dataset, key: str, in_one_task: bool, num_cpus: float) -> ray.data.Dataset:
    """``ds`` sorted by ``key``. Ray Data's distributed sort samples boundaries and shuffles
    between tasks: seconds even for a few hundred rows. A split small enough for one block is
    sorted in one task instead, into the same order (the keys are unique: hashes, ids)."""
    if not in_one_task:
        return ds.sort(key)
    return ds.repartition(1).map_batches(_sorted_batch, fn_kwargs={"key": key}, batch_size=None,
                                         batch_format="pandas", num_cpus=num_cpus)


def fits_one_block(location: str, split_name: str) -> bool:
    return is_local_path(location) and block_count(file_for_split(location, split_name)) == 1
