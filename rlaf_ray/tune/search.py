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

How trials are placed (and why they cannot deadlock): ``rlaf_ray.tune.trial``.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from rlaf_ray.config import ConfigError, RLAFConfig, dump_yaml, resolve_paths
from rlaf_ray.placement import format_resources
from rlaf_ray.storage import RunStorage, write_text_atomic
from rlaf_ray.tune.space import Dimension, param_space, validate_search
from rlaf_ray.tune.trial import (
    trainable,
    trial_dirname,
    trial_footprint,
)

SEARCH_CONFIG = "search_config.yaml"
# Ray Data's shuffle and sort tasks ask for one whole CPU, which must be free beside the trials.
DATA_HEADROOM_CPUS = 1.0
# Changing these between a search and its --resume changes nothing Tune restores.
RESUME_MAY_DIFFER = ("tune.max_concurrent_trials",)


def fitting_trials(probes: list[RLAFConfig], cluster: dict[str, float]) -> tuple[int, str]:
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
    why = (f"one trial holds {format_resources(footprint)} (driver, rollout, reward, learners) and Ray Data needs "
           f"{format_resources(headroom)} beside them; the cluster has {format_resources({k: cluster.get(k, 0.0) for k in footprint})}")
    return n, why


def concurrency(cfg: RLAFConfig, probes: list[RLAFConfig], cluster: dict[str, float]) -> int:
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


def shared_prompts(cfg: RLAFConfig, dims: list[Dimension]):
    """The train split, loaded and cached in the object store once for all trials, unless a
    searched field changes it (data.*, model.*): then each trial loads its own."""
    if any(d.field.split(".")[0] in ("data", "model") for d in dims):
        return None
    from rlaf_ray.data import load_split

    return load_split(cfg.data, cfg.model, "train")


def search_algorithm(cfg: RLAFConfig, max_concurrent: int):
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


def scheduler(cfg: RLAFConfig, probes: list[RLAFConfig]):
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


def check_resume(cfg: RLAFConfig, store: RunStorage, resume: bool) -> None:
    """--resume needs the search, with the same configuration; without it, a search there is kept."""
    from ray import tune

    exists = tune.Tuner.can_restore(store.location)
    if resume and not exists:
        raise ConfigError([f"--resume: no search to resume in {store.where()!r} (run.output_dir/run.name)"])
    if not resume and exists:
        raise ConfigError([f"run.name: a search already exists in {store.where()!r}; add --resume to continue it, "
                           "or choose another run.name"])
    store.pull(SEARCH_CONFIG)
    if resume and (store.local / SEARCH_CONFIG).is_file():
        saved = yaml.safe_load((store.local / SEARCH_CONFIG).read_text())
        changed = _diff(resolve_paths(cfg).to_dict(), saved)
        if changed:
            raise ConfigError([f"--resume: the configuration differs from the search's ({store.where(SEARCH_CONFIG)}): "
                               f"{changed[0]}; resume with the same config and overrides"])


def make_tuner(prepared: RLAFConfig, user_cfg: RLAFConfig, dims: list[Dimension], probes: list[RLAFConfig],
               max_concurrent: int, resume: bool):
    """A new Tuner over the search space, or (``resume``) the stopped search restored; a new one
    saves the search's configuration beside its experiment first."""
    from ray import tune

    store = prepared.run_storage
    run = trainable(prepared, shared_prompts(prepared, dims))
    if resume:
        # Tune restores the trials and the searcher, not the scheduler (ray 2.60's
        # TuneController.save_to_dir saves trial, searcher and callback state only): ASHA's rungs
        # start empty, so early stopping compares only results reported after the resume.
        print(f"[rlaf] tune: resuming {store.where()}: unfinished trials continue from their latest checkpoint; "
              "ASHA's rung records start anew (Tune does not save them)", flush=True)
        return tune.Tuner.restore(store.location, trainable=run, resume_unfinished=True, resume_errored=False)
    store.local.mkdir(parents=True, exist_ok=True)
    write_text_atomic(store.local / SEARCH_CONFIG, dump_yaml(user_cfg))
    store.push(SEARCH_CONFIG)
    t = prepared.tune
    print(f"[rlaf] tune: {t.num_samples} sample(s) of {', '.join(d.field for d in dims)}; "
          f"{t.search_alg} search, {t.scheduler} scheduler on {t.metric} ({t.mode}), "
          f"{max_concurrent} trial(s) at once; search directory {store.where()}", flush=True)
    return tune.Tuner(
        run,
        param_space=param_space(dims),
        tune_config=tune.TuneConfig(
            metric=t.metric, mode=t.mode, num_samples=t.num_samples,
            search_alg=search_algorithm(prepared, max_concurrent), scheduler=scheduler(prepared, probes),
            trial_name_creator=trial_dirname, trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(name=prepared.run.name, storage_path=prepared.run.output_dir),
    )


def tune_search(cfg: RLAFConfig, address: str | None = None, resume: bool = False) -> Path:
    """Run (or with ``resume`` continue) the search; returns its directory with the summary."""
    import ray

    from rlaf_ray.console import init_ray
    from rlaf_ray.placement import ensure_shared_output, placed
    from rlaf_ray.preflight import prepare
    from rlaf_ray.tune.summary import summarize

    # Every check that needs no Ray first: the search space, each sampled config, the metric.
    dims, probes = validate_search(cfg)
    user_cfg = resolve_paths(cfg)
    prepared = prepare(cfg, ("train",))
    store = prepared.run_storage  # a path, or a URI with a local mirror (rlaf_ray.storage)
    store.probe()  # a URI these credentials cannot write: one line now, before Ray
    check_resume(cfg, store, resume)

    init_ray(address)
    with placed(*probes):  # each probe must fit; the autoscaler's request stands until the search ends
        ensure_shared_output(prepared.run.output_dir)
        max_concurrent = concurrency(prepared, probes, ray.cluster_resources())
        make_tuner(prepared, user_cfg, dims, probes, max_concurrent, resume).fit()
    summarize(store, user_cfg, dims)
    return store.local

