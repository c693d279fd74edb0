"""``rlaf-ray tune``: a Ray Tune search in which every trial is a full distributed PPO run.

A trial is a Tune function (``run_trial``) whose driver actor calls ``rlaf_ray.train.train`` with
the trial's sampled values applied to the base configuration: its own rollout and reward actors,
its own Ray Train learner group, metrics reaching Tune through ``TuneReportCallback`` (Ray 2.60's
pattern for Train V2 inside Tune). ASHA stops trials whose metric trails at a rung; a random,
Optuna or HyperOpt searcher proposes the values. The prompt split is loaded once by the search's
driver and shared by the trials (unless a data.* or model.* field is searched).

The search directory is Tune's experiment directory, ``<run.output_dir>/<run.name>/``::

    tuner.pkl, experiment_state-*.json, ...   Tune's state, read by --resume
    search_config.yaml                        the search's configuration (--resume checks it)
    <trial id>/                               one trial: Tune's result.json, progress.csv and
                                              TensorBoard events (ray/tune/reward/mean,
                                              ray/tune/kl/mean, ...), and the PPO run itself
                                              (config.yaml, metrics.jsonl, tensorboard/,
                                              checkpoint_*/, final/adapter once it finished)
    trials.csv, trials.md                     one row per trial, best first
    best_config.yaml                          rlaf-ray train --config best_config.yaml

Resources, and why trials cannot deadlock
-----------------------------------------
Tune reserves a placement group per trial (``tune.with_resources`` + ``PlacementGroupFactory``):
an empty head bundle for the Tune function itself, a bundle for the trial's driver
(``tune.driver_num_cpus``), and one per rollout and per reward actor. A trial owns its actors'
resources before it starts, or does not start.

Tune runs its function with ``placement_group_capture_child_tasks=True``: everything started from
it without a scheduling strategy of its own must fit in the group's bundles. Ray Data's shuffle
and sort tasks (``data.shuffle``) name none and ask for a whole CPU, so a prompt pipeline built
there fails ("cannot fit into any bundles"). So the function only holds the Tune session: it
builds ``TuneReportCallback`` (which needs that session) and starts ``TrialDriver`` in the driver
bundle *without* capture; the driver runs ``train()``, which places the rollout and reward actors
in the group explicitly and leaves Ray Data's tasks free to run anywhere.

The learners cannot be reserved in the group either. Ray Train V2's controller creates the
learner group's own placement group, ``placement_group([per worker] * num_workers)``
(ray/train/v2/_internal/execution/worker_group/worker_group.py), and schedules each learner into
it with an explicit ``PlacementGroupSchedulingStrategy``; placement groups do not nest, so learner
bundles in the trial's group would sit idle and be paid twice. So Tune alone would start every
trial whose group fits; if their learner groups, or Ray Data's tasks, then did not fit, every
running trial would wait for resources that only a finishing trial frees: a deadlock. The search
therefore runs at most as many trials at once as fit completely (group + learners) next to one
CPU for Ray Data; a configured ``tune.max_concurrent_trials`` above that is refused (on an
autoscaling cluster, ``run.resource_wait_s > 0``, it is allowed with a note).
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from rlaf_ray.config import ConfigError, RunConfig, dump_yaml, from_dict, merge, resolve_paths
from rlaf_ray.placement import worker_demand
from rlaf_ray.tune_space import Dimension, param_space, validate_search

SEARCH_CONFIG = "search_config.yaml"
# Index of the driver's bundle once Tune has set the empty head bundle aside.
DRIVER_BUNDLE = 0
# Ray Data's shuffle and sort tasks ask for one whole CPU, which must be free beside the trials.
DATA_HEADROOM_CPUS = 1.0
# Changing these between a search and its --resume changes nothing Tune restores.
RESUME_MAY_DIFFER = ("tune.max_concurrent_trials",)


# ----------------------------------------------------------------------------------------------
# Resources of one trial


def trial_bundles(cfg: RunConfig) -> list[dict[str, float]]:
    """The trial's placement group: the Tune function (empty head bundle), its driver (bundle
    ``DRIVER_BUNDLE``), then every rollout and reward actor."""
    bundles = [{}, {"CPU": cfg.tune.driver_num_cpus}]
    for role in (cfg.resources.rollout, cfg.resources.reward):
        demand = worker_demand(role)
        # A role asking for nothing fits in any bundle; an empty bundle is not allowed.
        bundles += [demand] * role.num_workers if demand else []
    return bundles


def trial_footprint(cfg: RunConfig) -> dict[str, float]:
    """Everything one running trial holds: its placement group plus its learner group."""
    total: dict[str, float] = {}
    learners = cfg.resources.learner
    for bundle in trial_bundles(cfg) + [worker_demand(learners)] * learners.num_workers:
        for key, value in bundle.items():
            total[key] = total.get(key, 0.0) + value
    return total


def _fmt(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def fitting_trials(probes: list[RunConfig], cluster: dict[str, float]) -> tuple[int, str]:
    """How many trials fit the cluster at once (the largest sampled footprint each, a CPU for Ray
    Data beside them), and a line saying why."""
    footprint: dict[str, float] = {}
    for c in probes:
        for key, value in trial_footprint(c).items():
            footprint[key] = max(footprint.get(key, 0.0), value)
    headroom = {"CPU": max([DATA_HEADROOM_CPUS] + [c.data.num_cpus_per_task for c in probes])}
    counts = [math.floor((cluster.get(k, 0.0) - headroom.get(k, 0.0)) / v + 1e-9)
              for k, v in footprint.items() if v > 0]
    n = max(min(counts), 0) if counts else 1
    why = (f"one trial holds {_fmt(footprint)} (driver, rollout, reward, learners) and Ray Data needs "
           f"{_fmt(headroom)} beside them; the cluster has {_fmt({k: cluster.get(k, 0.0) for k in footprint})}")
    return n, why


def concurrency(cfg: RunConfig, probes: list[RunConfig], cluster: dict[str, float]) -> int:
    n, why = fitting_trials(probes, cluster)
    wanted = cfg.tune.max_concurrent_trials
    autoscaling = cfg.run.resource_wait_s > 0
    if wanted is None:
        if n == 0:
            if autoscaling:
                return 1
            raise ConfigError([f"tune: no trial fits this cluster; {why}"])
        return n
    if wanted > n:
        if not autoscaling:
            raise ConfigError([f"tune.max_concurrent_trials: {wanted} trials would wait on each other's "
                               f"learners; at most {n} fit: {why}"])
        print(f"[rlaf] tune: {wanted} concurrent trials need more than the {n} that fit now; "
              f"waiting for the autoscaler ({why})", flush=True)
    return wanted


# ----------------------------------------------------------------------------------------------
# One trial (runs in the trial's actor)


def experiment_dir(cfg: RunConfig) -> Path:
    return Path(cfg.run.output_dir) / cfg.run.name


def trial_config(base: dict, sampled: dict, trial_id: str) -> RunConfig:
    """The base configuration with the trial's values; its run is ``<search dir>/<trial id>``
    (Tune's trial directory too), its actors ``rlaf:<trial id>:rollout-0``, ..."""
    exp = experiment_dir(from_dict(base))
    overrides = {"run": {"name": trial_id, "output_dir": str(exp)},
                 # The before/after report is for the run you keep: train the best config.
                 "evaluation": {"after_train": False}}
    return from_dict(merge(merge(base, sampled), overrides))


class TrialDriver:
    """The trial's ``train()`` driver, in the trial's driver bundle without placement-group
    capture (see the module docstring)."""

    def run(self, cfg: dict, callback, placement_group, prompts) -> str:
        from rlaf_ray.train import train

        return str(train(from_dict(cfg), callbacks=[callback], placement_group=placement_group,
                         prompts=prompts))


def run_trial(config: dict, base: dict, prompts=None) -> None:
    """Tune function: one full PPO run whose per-iteration metrics are the trial's results."""
    import ray
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(base, config, trial_id)
    group = ray.util.get_current_placement_group()
    driver = ray.remote(TrialDriver).options(
        name=f"rlaf:{trial_id}:driver", num_cpus=cfg.tune.driver_num_cpus,
        scheduling_strategy=PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=DRIVER_BUNDLE, placement_group_capture_child_tasks=False),
    ).remote()
    # Killed with this function's actor when Tune stops the trial (ASHA): the driver, its roles
    # and its learners are owned by it and go with it.
    ray.get(driver.run.remote(cfg.to_dict(), TuneReportCallback(), group, prompts))


def _trial_dirname(trial) -> str:
    return trial.trial_id


def trainable(base: dict, prompts=None):
    """``run_trial`` bound to the base config (and the shared prompts, if any), with each trial's
    placement group."""
    from ray import tune
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    def resources(sampled: dict) -> PlacementGroupFactory:
        # Per trial: a searched resources.* field changes what the trial reserves.
        return PlacementGroupFactory(trial_bundles(from_dict(merge(base, sampled))), strategy="PACK")

    return tune.with_resources(tune.with_parameters(run_trial, base=base, prompts=prompts), resources)


# ----------------------------------------------------------------------------------------------
# The search (driver)


def shared_prompts(cfg: RunConfig, dims: list[Dimension]):
    """The train split, loaded and cached in the object store once for all trials, unless a
    searched field changes it (data.*, model.*): then each trial loads its own."""
    if any(d.field.split(".")[0] in ("data", "model") for d in dims):
        return None
    from rlaf_ray.data import load_split

    return load_split(cfg.data, cfg.model, "train")


def search_algorithm(cfg: RunConfig, max_concurrent: int):
    """The searcher, limited to ``max_concurrent`` trials at once.

    Tune applies ``TuneConfig(max_concurrent_trials)`` by wrapping a ``Searcher`` in a
    ``ConcurrencyLimiter``, but ignores it (with a warning) for a ``BasicVariantGenerator``
    instance, which takes its own ``max_concurrent``: so the limit is set here, for each kind."""
    from ray.tune.search import ConcurrencyLimiter

    t = cfg.tune
    if t.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=t.seed), max_concurrent=max_concurrent)
    if t.search_alg == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return ConcurrencyLimiter(HyperOptSearch(random_state_seed=t.seed), max_concurrent=max_concurrent)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=t.seed, max_concurrent=max_concurrent)


def scheduler(cfg: RunConfig, probes: list[RunConfig]):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    t = cfg.tune
    if t.scheduler == "fifo":
        return FIFOScheduler()
    # Rungs only below the last iteration, and survivors of the last rung run to their end: a
    # trial stopped on its final report could be killed before it writes final/adapter.
    # "iteration" (reported by the run) rather than Tune's training_iteration, which restarts at
    # 1 when --resume restarts a trial that then continues from its checkpoint.
    max_t = min(c.ppo.num_iterations for c in probes) - 1
    return ASHAScheduler(time_attr="iteration", max_t=max_t, grace_period=t.grace_period,
                         reduction_factor=t.reduction_factor, stop_last_trials=False)


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        where = f"{prefix}{k}"
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff(a[k], b[k], where + ".")
        elif a.get(k) != b.get(k) and where not in RESUME_MAY_DIFFER:
            out.append(f"{where}: {a.get(k)!r} now, {b.get(k)!r} in the search")
    return out


def check_resume(cfg: RunConfig, exp: Path, resume: bool) -> None:
    """--resume needs the search, with the same configuration; without it, a search there is kept."""
    from ray import tune

    exists = tune.Tuner.can_restore(str(exp))
    if resume and not exists:
        raise ConfigError([f"--resume: no search to resume in {str(exp)!r} (run.output_dir/run.name)"])
    if not resume and exists:
        raise ConfigError([f"run.name: a search already exists in {str(exp)!r}; add --resume to continue it, "
                           "or choose another run.name"])
    if resume and (exp / SEARCH_CONFIG).is_file():
        saved = yaml.safe_load((exp / SEARCH_CONFIG).read_text())
        changed = _diff(resolve_paths(cfg).to_dict(), saved)
        if changed:
            raise ConfigError([f"--resume: the configuration differs from the search's ({exp / SEARCH_CONFIG}): "
                               f"{changed[0]}; resume with the same config and overrides"])


def tune_search(cfg: RunConfig, address: str | None = None, resume: bool = False) -> Path:
    """Run (or with ``resume`` continue) the search; returns its directory with the summary."""
    import ray
    from ray import tune

    from rlaf_ray.placement import ensure_placement, ensure_shared_output
    from rlaf_ray.preflight import prepare
    from rlaf_ray.tune_summary import summarize

    # Every check that needs no Ray first: the search space, each sampled config, the metric.
    dims, probes = validate_search(cfg)
    user_cfg = resolve_paths(cfg)
    prepared = prepare(cfg, ("train",))
    exp = experiment_dir(prepared)
    check_resume(cfg, exp, resume)

    if not ray.is_initialized():
        ray.init(address=address)
    for probe in probes:
        ensure_placement(probe)
    ensure_shared_output(prepared.run.output_dir)
    max_concurrent = concurrency(prepared, probes, ray.cluster_resources())

    base = prepared.to_dict()
    run = trainable(base, shared_prompts(prepared, dims))
    if resume:
        # Tune restores the trials and the searcher, not the scheduler (ray 2.60's
        # TuneController.save_to_dir saves trial, searcher and callback state only): ASHA's rungs
        # start empty, so early stopping compares only results reported after the resume.
        print(f"[rlaf] tune: resuming {exp}: unfinished trials continue from their latest checkpoint; "
              "ASHA's rung records start anew (Tune does not save them)", flush=True)
        tuner = tune.Tuner.restore(str(exp), trainable=run, resume_unfinished=True, resume_errored=False)
    else:
        exp.mkdir(parents=True, exist_ok=True)
        (exp / SEARCH_CONFIG).write_text(dump_yaml(user_cfg))
        t = prepared.tune
        print(f"[rlaf] tune: {t.num_samples} sample(s) of {', '.join(d.field for d in dims)}; "
              f"{t.search_alg} search, {t.scheduler} scheduler on {t.metric} ({t.mode}), "
              f"{max_concurrent} trial(s) at once; search directory {exp}", flush=True)
        tuner = tune.Tuner(
            run,
            param_space=param_space(dims),
            tune_config=tune.TuneConfig(
                metric=t.metric, mode=t.mode, num_samples=t.num_samples,
                search_alg=search_algorithm(prepared, max_concurrent), scheduler=scheduler(prepared, probes),
                trial_name_creator=_trial_dirname, trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(name=prepared.run.name, storage_path=prepared.run.output_dir),
        )
    tuner.fit()
    summarize(exp, user_cfg, dims)
    return exp

