"""The driver of a PPO run: checks, the role actors, and the learner group (Ray Train).

``train`` checks everything it can before any actor starts, starts the rollout and reward actors
(``rlaf_ray.roles``), and runs the learner group as a Ray Train ``TorchTrainer`` whose per-rank
function is ``rlaf_ray.roles.learner.learner_loop`` (through ``learner_entry``). It is the one entry
of the command line, the Tune trials and ``ray job submit``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
from ray.data import ExecutionOptions
from ray.train import CheckpointConfig, DataConfig, FailureConfig
from ray.train.torch import TorchTrainer

from rlaf_ray.config import ConfigError, RLAFConfig, RoleResources
from rlaf_ray.console import init_ray, train_logging
from rlaf_ray.controller_settings import controller_settings
from rlaf_ray.data import PromptSplit, get_source, load_split
from rlaf_ray.determinism import deterministic_runtime_env
from rlaf_ray.interrupt import (
    RunInterrupted,
    fit_stoppable,
    start_stop_request,
    stopped_early,
)
from rlaf_ray.placement import ensure_shared_output, placed, scaling_config
from rlaf_ray.preflight import prepare
from rlaf_ray.roles.learner_entry import learner_entry
from rlaf_ray.roles.reward import RewardWorker
from rlaf_ray.roles.rollout import RolloutWorker
from rlaf_ray.run_guard import check_run_dir, save_run_config
from rlaf_ray.storage import write_text_atomic
from rlaf_ray.worker_setup import policy_runtime_env


def actor_options(res: RoleResources, name: str, placement_group=None, runtime_env: dict | None = None,
                  restarts: int = 0, retries: int = 0) -> dict:
    """``placement_group``: reserved for these actors (a Tune trial's group): each goes into any
    bundle with room, and what it starts itself is not held to the group. ``restarts``: Ray starts
    the actor again after its process dies; ``retries``: Ray resends the calls it lost then."""
    options = {"name": name, "num_cpus": res.num_cpus, "num_gpus": res.num_gpus,
               "resources": dict(res.resources), "max_restarts": restarts, "max_task_retries": retries}
    if runtime_env:
        options["runtime_env"] = runtime_env
    if placement_group is not None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            placement_group, placement_group_bundle_index=-1, placement_group_capture_child_tasks=False)
    return options


@dataclass
class Roles:
    rollout: list
    reward: list
    starting: list  # each actor's ``ready`` call: resolves once its model is loaded, raises if it failed

    def all(self) -> list:
        return self.rollout + self.reward


def start_roles(cfg: RLAFConfig, placement_group=None) -> Roles:
    """Rollout and reward actors, named ``rlaf:<run>:<role>-<i>`` for the Ray dashboard. Both are
    restarted when their process dies (``run.role_restarts``): the stateless reward actor has its
    lost calls resent by Ray; the learner re-syncs a restarted rollout actor and resends its call
    itself (``roles.calls.collect_batch``).

    Returns at once: the actors load their models while the learner group starts (their calls
    wait for them), and ``fit_stoppable`` awaits ``Roles.starting`` beside the fit."""
    prefix, restarts = f"rlaf:{cfg.run.name}", cfg.run.role_restarts
    policy_env = policy_runtime_env(cfg.model, cfg.run.deterministic)
    rollout = [ray.remote(RolloutWorker)
               .options(**actor_options(cfg.resources.rollout, f"{prefix}:rollout-{i}", placement_group, policy_env,
                                        restarts=restarts))
               .remote(cfg.model, cfg.lora, cfg.generation, i, deterministic=cfg.run.deterministic)
               for i in range(cfg.resources.rollout.num_workers)]
    reward = [ray.remote(RewardWorker)
              .options(**actor_options(cfg.resources.reward, f"{prefix}:reward-{i}", placement_group,
                                       deterministic_runtime_env(cfg.run.deterministic),
                                       restarts=restarts, retries=restarts))
              .remote(cfg.reward, i) for i in range(cfg.resources.reward.num_workers)]
    return Roles(rollout, reward, [actor.ready.remote() for actor in rollout + reward])


def stop_roles(roles: Roles) -> None:
    for actor in roles.all():
        ray.kill(actor)


def count_prompts(cfg: RLAFConfig, prompts: PromptSplit) -> dict[str, int]:
    """One streaming pass over the split: enough prompts for a batch? Report the token limit."""
    stats = prompts.stats()
    where = f"the {prompts.name} split of data.path {get_source(cfg.data).location(cfg.data)!r}"
    if stats["rows"] == 0:
        raise ConfigError([f"data: no prompts left in {where} after the filters (source {cfg.data.source!r}, "
                           f"min_chars={cfg.data.min_chars}, max_chars={cfg.data.max_chars}, "
                           f"too_long={cfg.data.too_long!r})"])
    needed = cfg.ppo.prompts_per_iteration
    if stats["rows"] < needed:
        raise ConfigError([f"data: {stats['rows']} prompts in {where}, fewer than the {needed} of one batch "
                           f"(ppo.batch_size={cfg.ppo.batch_size} / "
                           f"ppo.samples_per_prompt={cfg.ppo.samples_per_prompt})"])
    print(f"[rlaf] data: {stats['rows']} prompts in {where}; longer than "
          f"model.max_prompt_length={cfg.model.max_prompt_length} tokens: {stats['truncated']} truncated "
          f"from the left, {stats['dropped']} dropped", flush=True)
    return stats


def prompt_data_config() -> DataConfig:
    # A fixed order (and so a fixed split between ranks) every epoch: with the seeded local
    # shuffle in ``prompt_batches``, a resumed run can skip exactly the batches it saw.
    return DataConfig(execution_options=ExecutionOptions(preserve_order=True))


def eva_prompts(cfg: RLAFConfig, prompts: PromptSplit) -> list[str]:
    """``lora.init: eva``: the first ``lora.eva_prompts`` train prompts, as the rollouts see them
    (the split's fixed order: the same prompts on every run and resume); none otherwise."""
    if cfg.lora.init != "eva":
        return []
    return [str(row["prompt"]) for row in prompts.dataset.take(cfg.lora.eva_prompts)]


def run_learners(cfg: RLAFConfig, changes: list, callbacks: list | None, placement_group,
                 prompts: PromptSplit | None) -> Path:
    """Save the run's config, start the role actors and run the learner group to the end."""
    ensure_shared_output(cfg.run.output_dir)
    if prompts is None:
        prompts = load_split(cfg.data, cfg.model, "train")
    stats = count_prompts(cfg, prompts)

    run_dir = cfg.run_dir
    print(save_run_config(cfg, changes), flush=True)
    write_text_atomic(run_dir / "data_stats.json", json.dumps({"train": stats}, indent=1))
    cfg.run_storage.push("data_stats.json")

    roles = start_roles(cfg, placement_group)
    stop = start_stop_request()
    try:
        trainer = TorchTrainer(
            learner_entry,
            # The role actors' handles travel by reference: a handle unpickled in Ray Train's
            # controller would import its class's module there (torch, peft: see learner_entry).
            train_loop_config={"config": cfg, "roles": ray.put((roles.rollout, roles.reward)),
                               "num_prompts": stats["rows"], "stop": stop, "eva_prompts": eva_prompts(cfg, prompts)},
            scaling_config=scaling_config(cfg.resources.learner),
            run_config=ray.train.RunConfig(
                name=cfg.run.name,
                storage_path=cfg.run.output_dir,
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
                failure_config=FailureConfig(max_failures=cfg.run.max_failures), logging_config=train_logging(),
                callbacks=list(callbacks or []), worker_runtime_env=policy_runtime_env(cfg.model, cfg.run.deterministic),
            ),
            datasets={"train": prompts.dataset},
            dataset_config=prompt_data_config(),
        )
        with controller_settings():
            result = fit_stoppable(trainer, stop, roles.starting)
        if stopped_early(stop) and result.metrics["iteration"] < cfg.ppo.num_iterations:
            raise RunInterrupted(result.metrics["iteration"], cfg.ppo.num_iterations)
    finally:
        stop_roles(roles)
        ray.kill(stop)
    return run_dir


def train(cfg: RLAFConfig, address: str | None = None, callbacks: list | None = None,
          placement_group=None, prompts: PromptSplit | None = None, resume: bool = False) -> Path:
    """Run PPO to completion (or resume it); returns the run directory holding ``final/adapter``.

    A run directory that already holds a run continues it only with the same settings, or with
    ``resume`` and changes that ``rlaf_ray.run_guard.RESUMABLE`` allows (``--resume``).

    ``address``: a Ray cluster to join (default: RAY_ADDRESS, else a local instance).
    ``callbacks``: extra Ray Train callbacks, e.g. ``TuneReportCallback`` when this run is a Tune
    trial; ``placement_group``: where the rollout and reward actors are reserved (the trial's);
    ``prompts``: the train split already loaded with these data and model settings (shared by a
    search's trials). ``rlaf_ray.tune`` calls it from an actor of the trial, Ray initialized.
    """
    evaluate_after = cfg.evaluation.after_train
    # every check that needs no actor, before Ray starts
    cfg = prepare(cfg, ("train", cfg.evaluation.split) if evaluate_after else ("train",),
                  evaluation=evaluate_after)
    changes = check_run_dir(cfg, resume)
    init_ray(address)
    with placed(cfg):
        run_dir = run_learners(cfg, changes, callbacks, placement_group, prompts)
    if evaluate_after:
        from rlaf_ray.evaluation.report import (
            write_report,  # matplotlib etc. only when needed
        )

        cfg.run_storage.pull("final", "metrics.jsonl")  # written by rank 0, maybe on another node
        write_report(cfg, run_dir)
        cfg.run_storage.push("report")
        print(f"[rlaf] report: {cfg.run_storage.where('report')}", flush=True)
    return run_dir
