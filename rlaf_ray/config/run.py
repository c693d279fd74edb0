"""Where a run lives and what it runs on: resources per role, run directory, the Tune search."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from rlaf_ray.config.fields import Number, Section


class RoleResources(Section):
    num_workers: int = Field(1, ge=1, description="Actors (or learner ranks) of this role.")
    num_cpus: Number = Field(1.0, ge=0.0, description="CPUs per worker (fractions share a core).")
    num_gpus: Number = Field(0.0, ge=0.0, description="GPUs per worker (fractions share a GPU; whole above 1).")
    resources: dict[str, Number] = Field(default_factory=dict, description=(
        "Custom Ray resources, e.g. {inference_node: 0.01}, to pin the role to a node type."))

    @model_validator(mode="after")
    def _whole_gpus_above_one(self):
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ValueError(f"num_gpus: {self.num_gpus} must be a whole number when above 1")
        return self


class ResourcesSettings(Section):
    learner: RoleResources = Field(default_factory=lambda: RoleResources(num_workers=2),
                                   description="Ray Train workers running the PPO update (DDP).")
    rollout: RoleResources = Field(default_factory=RoleResources, description="Actors generating responses.")
    reward: RoleResources = Field(default_factory=RoleResources, description="Actors scoring responses.")


class RunSettings(Section):
    name: str = Field("rlaf", description=(
        "Run directory name under output_dir; the same name and output_dir resume the run."))
    output_dir: str = Field("results", description=(
        "Parent of the run directory: a local or shared path, or a URI (s3://, gs://, any pyarrow "
        "filesystem) that every file of the run reaches. Under `ray job submit` a relative path is refused."))
    checkpoint_every: int = Field(5, ge=1, description="Iterations between checkpoints.")
    keep_checkpoints: Annotated[int, Field(ge=1)] | None = Field(2, description="Checkpoints kept; null: all.")
    max_failures: int = Field(1, ge=0, description=(
        "Restarts of the learner group (from the latest checkpoint) after a learner rank dies; 0: the run "
        "ends and resumes with the same command."))
    resource_wait_s: Number = Field(0.0, ge=0.0, description=(
        "Seconds to wait for an autoscaling cluster to add the nodes the roles need (0: fail at once)."))
    cache_dir: str = Field("~/.cache/rlaf_ray", description="Where the offline tiny models are cached.")
    role_restarts: int = Field(3, ge=0, description=(
        "Restarts allowed to each rollout and reward actor whose process dies; the call it was serving is "
        "retried, a restarted rollout actor first gets the current adapter. 0: a dead actor ends the run."))
    role_timeout_s: Annotated[Number, Field(gt=0.0)] | None = Field(900.0, description=(
        "Seconds one generate or score call may take before the run stops with the role and actor named; "
        "null: no limit."))
    deterministic: bool = Field(False, description=(
        "Deterministic algorithms in every process that trains or generates (torch."
        "use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG, no cuDNN autotuning): bitwise-repeatable "
        "GPU runs, somewhat slower; CPU runs repeat either way."))

    @model_validator(mode="after")
    def _plain_name(self):
        # The run directory is output_dir/name: "..", "." or "a/b" would write outside it or nest runs.
        if self.name in ("", ".", "..") or "/" in self.name or "\\" in self.name or self.name.strip() != self.name:
            raise ValueError(f"name: {self.name!r} must be one directory name: not '.' or '..', without '/' "
                             f"or surrounding spaces")
        return self


class TuneSettings(Section):
    """``rlaf-ray tune``: a Ray Tune search in which every trial is a full PPO run."""

    search_space: dict[str, Any] = Field(default_factory=dict, description=(
        "Dotted field -> {choice: [...]}, {grid: [...]}, {uniform: [low, high]} or "
        "{loguniform: [low, high]}; checked by rlaf_ray.tune.space."))
    num_samples: int = Field(4, ge=1, description="Trials sampled.")
    search_alg: Literal["random", "optuna", "hyperopt"] = Field("random", description=(
        "random (Tune's BasicVariantGenerator), optuna or hyperopt (when installed)."))
    seed: int | None = Field(0, description="Seed of the searcher.")
    metric: str = Field("objective", description=(
        "A metric the run reports each iteration; objective = reward/mean - kl_price * kl/mean."))
    kl_price: Number = Field(0.1, ge=0.0, description=(
        "The objective's price of one nat of KL to the base per response, in reward units: a trial "
        "cannot win by drifting from the base's language."))
    mode: Literal["max", "min"] = Field("max", description="Maximize or minimize the metric.")
    scheduler: Literal["asha", "fifo"] = Field("asha", description=(
        "asha: stop trials whose metric trails at a rung; fifo: run every trial to the end."))
    grace_period: int = Field(2, ge=1, description="ASHA: iterations before a trial can be stopped.")
    reduction_factor: Number = Field(2.0, gt=1.0, description="ASHA: rung spacing; 1/rf of trials go on.")
    max_concurrent_trials: Annotated[int, Field(ge=1)] | None = Field(None, description=(
        "Trials at once; null: as many as the cluster can host completely."))
    driver_num_cpus: Number = Field(0.25, gt=0.0, description="CPUs held by each trial's driver.")
