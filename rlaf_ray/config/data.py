"""Where the prompts come from and how they are filtered and split."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from rlaf_ray.config.fields import Number, Section

SPLITS = ("train", "eval", "test")
LOCAL_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def is_local_path(path: str) -> bool:
    """A data file (by its suffix) rather than a dataset-hub name such as ``knkarthick/dialogsum``."""
    return path.lower().endswith(LOCAL_DATA_SUFFIXES) or path.startswith((".", "/", "~"))


class DataSettings(Section):
    source: str = Field("dialogsum", description=(
        "dialogsum | real_toxicity_prompts | dialoconan | files (checked against rlaf_ray.data.SOURCES)."))
    path: str | None = Field("jobs/data/dialogsum/{split}.jsonl", description=(
        "A local .jsonl/.json/.csv/.parquet file ({split} in the name: one file per split) or a "
        "dataset-hub name; null: the source's usual hub dataset."))
    splits: dict[str, str] = Field(
        default_factory=lambda: {"train": "train", "eval": "validation", "test": "test"},
        description="Our split -> the dataset's own split name.")
    eval_fraction: Number = Field(0.0, ge=0.0, lt=1.0, description=(
        "Seeded held-out share carved from train; above 0 it replaces the dataset's eval split."))
    test_fraction: Number = Field(0.0, ge=0.0, lt=1.0, description=(
        "Seeded held-out share carved from train; above 0 it replaces the dataset's test split."))
    max_rows: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict, description=(
        "Row caps per split after the seeded shuffle, e.g. {train: 1000, eval: 100}."))
    shuffle: bool = Field(True, description="Seeded shuffle before the caps.")
    seed: int = Field(0, description="Seed of the shuffle and of the held-out shares.")
    text_column: str | None = Field(None, description="Column of the source text; null: the source's default.")
    reference_column: str | None = Field(None, description="Column of the reference reply (files source).")
    template: str | None = Field(None, description="Prompt template with {column} placeholders; null: the source's.")
    min_chars: int = Field(0, ge=0, description="Drop source texts shorter than this (characters).")
    max_chars: Annotated[int, Field(ge=1)] | None = Field(None, description="Drop source texts longer than this.")
    challenging_only: bool = Field(False, description="real_toxicity_prompts: the challenging subset only.")
    min_prompt_toxicity: Annotated[Number, Field(ge=0.0, le=1.0)] | None = Field(
        None, description="real_toxicity_prompts: lowest prompt.toxicity kept.")
    max_prompt_toxicity: Annotated[Number, Field(ge=0.0, le=1.0)] | None = Field(
        None, description="real_toxicity_prompts: highest prompt.toxicity kept.")
    too_long: Literal["truncate", "drop"] = Field("truncate", description=(
        "Prompts over model.max_prompt_length tokens: truncated from the left, or dropped."))
    cache_in_object_store: bool = Field(True, description=(
        "Keep prepared prompts in Ray's object store after the first pass (off: re-run the pipeline "
        "every epoch, for splits larger than the object store and disk)."))
    num_cpus_per_task: Number = Field(0.25, gt=0.0, description=(
        "CPUs per Ray Data task (Ray's default of 1 stalls a small machine whose CPUs the actors hold)."))

    @model_validator(mode="after")
    def _splits_and_shares(self):
        problems = [f"splits.{key}: unknown split; expected {', '.join(SPLITS)}"
                    for key in self.splits if key not in SPLITS]
        problems += [f"max_rows.{key}: unknown split; expected {', '.join(SPLITS)}"
                     for key in self.max_rows if key not in SPLITS]
        share = self.eval_fraction + self.test_fraction
        if share >= 1.0:
            problems.append(f"eval_fraction + data.test_fraction: {share} leaves no train rows; "
                            "expected a sum below 1")
        if self.max_chars is not None and self.min_chars > self.max_chars:
            problems.append(f"min_chars: {self.min_chars} is above data.max_chars ({self.max_chars})")
        if problems:
            raise ValueError("\n".join(problems))
        return self
