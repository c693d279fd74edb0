"""The whole configuration of a run, its cross-section checks, and its paths made absolute."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, model_validator

from rlaf_ray.config.data import DataSettings, is_local_path
from rlaf_ray.config.errors import ConfigError, check_value, problems_from
from rlaf_ray.config.evaluation import EvaluationSettings
from rlaf_ray.config.fields import Section, leaf_fields
from rlaf_ray.config.policy import (
    TINY_PREFIX,
    GenerationSettings,
    LoraSettings,
    ModelSettings,
    RewardSettings,
)
from rlaf_ray.config.run import ResourcesSettings, RunSettings, TuneSettings
from rlaf_ray.config.training import PPOSettings, SFTSettings

if TYPE_CHECKING:
    from rlaf_ray.storage import RunStorage

# Every field naming a model: hub name, local directory or tiny offline model.
MODEL_FIELDS = (("model", "name_or_path"), ("reward", "model_name_or_path"),
                ("evaluation", "classifier"), ("evaluation", "holdout_classifier"),
                ("evaluation", "perplexity_model"))


def batch_divides(batch_size: int, num_minibatches: int, learners: int, group: int) -> str | None:
    if batch_size % (learners * group):
        return (f"ppo.batch_size: {batch_size} responses do not divide across "
                f"resources.learner.num_workers={learners} learners in whole groups of "
                f"ppo.samples_per_prompt={group}")
    if (batch_size // learners) % num_minibatches:
        return (f"ppo.batch_size: {batch_size // learners} responses per learner "
                f"({batch_size}/{learners}) do not divide into "
                f"ppo.num_minibatches={num_minibatches} minibatches")
    return None


# Checks across sections, and the fields each reads: they run whenever those fields are valid,
# even if others are not, so that every problem is reported at once.
CROSS_SECTION_CHECKS = (
    (batch_divides, ("ppo.batch_size", "ppo.num_minibatches", "resources.learner.num_workers",
                     "ppo.samples_per_prompt")),
)


class RLAFConfig(Section):
    """Everything a run needs (train, tune, sft, evaluation). YAML keys are the field names."""

    model: ModelSettings = Field(default_factory=ModelSettings, description="The policy.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="The trained adapter.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings, description="Rollout sampling.")
    reward: RewardSettings = Field(default_factory=RewardSettings, description="The reward.")
    data: DataSettings = Field(default_factory=DataSettings, description="The prompts.")
    ppo: PPOSettings = Field(default_factory=PPOSettings, description="PPO.")
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings, description="Toxicity meter.")
    sft: SFTSettings = Field(default_factory=SFTSettings, description="Supervised baseline.")
    resources: ResourcesSettings = Field(default_factory=ResourcesSettings, description="Ray resources per role.")
    run: RunSettings = Field(default_factory=RunSettings, description="Run directory and checkpoints.")
    tune: TuneSettings = Field(default_factory=TuneSettings, description="Ray Tune search.")

    @model_validator(mode="after")
    def _cross_section(self):
        problems = [p for check, fields in CROSS_SECTION_CHECKS
                    if (p := check(*(_get(self, f) for f in fields))) is not None]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def run_storage(self) -> "RunStorage":
        """The run directory, ``<output_dir>/<name>``: a local path or a URI, with its local mirror."""
        from rlaf_ray.storage import RunStorage, join

        return RunStorage(join(self.run.output_dir, self.run.name), self.run.cache_dir)

    @property
    def run_dir(self) -> Path:
        """Where this process reads and writes the run's files: the run directory itself, or its
        local mirror when ``run.output_dir`` is a URI (``rlaf_ray.storage``)."""
        return self.run_storage.local

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as in a YAML file (the Tune search merges dicts)."""
        return self.model_dump()

    def replace(self, **sections: dict[str, Any]) -> "RLAFConfig":
        """A copy with some fields of some sections changed: ``cfg.replace(run={"name": "x"})``."""
        return self.model_copy(update={name: getattr(self, name).model_copy(update=values)
                                       for name, values in sections.items()})


def from_dict(data: Any) -> RLAFConfig:
    """Validate a nested dict; every problem at once, one line each (``ConfigError``)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"config: expected a mapping, got {data!r}"])
    try:
        return RLAFConfig.model_validate(data)
    except ValidationError as err:
        problems = problems_from(err, RLAFConfig)
    problems += [p for p in _cross_section_problems(data) if p not in problems]
    raise ConfigError(problems)


def _get(tree: Any, dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part, default) if isinstance(tree, dict) else getattr(tree, part, default)
    return tree


_MISSING = object()


def _cross_section_problems(data: dict) -> list[str]:
    """The cross-section checks whose own fields are valid, on a config that is not."""
    fields, defaults, problems = leaf_fields(RLAFConfig), RLAFConfig(), []
    for check, names in CROSS_SECTION_CHECKS:
        try:
            values = []
            for name in names:
                raw = _get(data, name, _MISSING)
                values.append(_get(defaults, name) if raw is _MISSING else check_value(fields[name], raw, name))
        except ValueError:
            continue  # the field's own problem is already reported
        problem = check(*values)
        if problem is not None:
            problems.append(problem)
    return problems


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


# Set by Ray in the driver of a job (``ray job submit``), whose working directory is Ray's
# temporary copy of ``--working-dir``: removed when Ray cleans up, and new after any code change.
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def _output_dir(path: str) -> str:
    if "://" in path:
        return path  # a URI (s3://, gs://, ...): Ray Train and pyarrow resolve it
    if RAY_JOB_ENV in os.environ and not Path(path).expanduser().is_absolute():
        raise ConfigError([f"run.output_dir: {path!r} is relative, and under `ray job submit` it would land in "
                           f"Ray's temporary copy of the working directory ({os.getcwd()}), which Ray deletes; "
                           f"set an absolute path on shared storage (e.g. /mnt/shared/rlaf-results) or a URI "
                           f"(s3://bucket/rlaf-results)"])
    return _absolute(path)


def resolve_paths(c: RLAFConfig) -> RLAFConfig:
    """Make file paths absolute: Ray Train workers run in another working directory."""
    changes: dict[str, dict[str, Any]] = {
        "run": {"output_dir": _output_dir(c.run.output_dir), "cache_dir": _absolute(c.run.cache_dir)}}
    if c.data.path is not None and is_local_path(c.data.path):
        changes["data"] = {"path": _absolute(c.data.path)}
    if c.lora.init_from is not None:
        changes["lora"] = {"init_from": _absolute(c.lora.init_from)}
    for section, attr in MODEL_FIELDS:
        value = getattr(getattr(c, section), attr)
        if value is not None and not value.startswith(TINY_PREFIX) and Path(value).expanduser().exists():
            changes.setdefault(section, {})[attr] = _absolute(value)
    return c.replace(**changes)
