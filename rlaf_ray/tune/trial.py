"""One trial of ``rlaf-ray tune``: a full PPO run on its own placement group.

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

from rlaf_ray.config import RLAFConfig, from_dict, merge
from rlaf_ray.placement import worker_demand

# Index of the driver's bundle once Tune has set the empty head bundle aside.
DRIVER_BUNDLE = 0


def trial_bundles(cfg: RLAFConfig) -> list[dict[str, float]]:
    """The trial's placement group: the Tune function (empty head bundle), its driver (bundle
    ``DRIVER_BUNDLE``), then every rollout and reward actor."""
    bundles = [{}, {"CPU": cfg.tune.driver_num_cpus}]
    for role in (cfg.resources.rollout, cfg.resources.reward):
        demand = worker_demand(role)
        # A role asking for nothing fits in any bundle; an empty bundle is not allowed.
        bundles += [demand] * role.num_workers if demand else []
    return bundles


def trial_footprint(cfg: RLAFConfig) -> dict[str, float]:
    """Everything one running trial holds: its placement group plus its learner group."""
    total: dict[str, float] = {}
    learners = cfg.resources.learner
    for bundle in trial_bundles(cfg) + [worker_demand(learners)] * learners.num_workers:
        for key, value in bundle.items():
            total[key] = total.get(key, 0.0) + value
    return total


def with_values(base: RLAFConfig, sampled: dict) -> RLAFConfig:
    """The base configuration with a trial's sampled values (nested like the config)."""
    return from_dict(merge(base.to_dict(), sampled))


def trial_config(base: RLAFConfig, sampled: dict, trial_id: str) -> RLAFConfig:
    """The base configuration with the trial's values; its run is ``<search dir>/<trial id>``
    (Tune's trial directory too), its actors ``rlaf:<trial id>:rollout-0``, ..."""
    return with_values(base, sampled).replace(
        run={"name": trial_id, "output_dir": base.run_storage.location},
        # The before/after report is for the run you keep: train the best config.
        evaluation={"after_train": False})


class TrialDriver:
    """The trial's ``train()`` driver, in the trial's driver bundle without placement-group
    capture (see the module docstring)."""

    def run(self, cfg: RLAFConfig, callback, placement_group, prompts) -> str:
        from rlaf_ray.train import train

        return str(train(cfg, callbacks=[callback], placement_group=placement_group,
                         prompts=prompts))


def run_trial(config: dict, base: RLAFConfig, prompts=None) -> None:
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
    ray.get(driver.run.remote(cfg, TuneReportCallback(), group, prompts))


def trial_dirname(trial) -> str:
    return trial.trial_id


def trainable(base: RLAFConfig, prompts=None):
    """``run_trial`` bound to the base config (and the shared prompts, if any), with each trial's
    placement group."""
    from ray import tune
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    def resources(sampled: dict) -> PlacementGroupFactory:
        # Per trial: a searched resources.* field changes what the trial reserves.
        return PlacementGroupFactory(trial_bundles(with_values(base, sampled)), strategy="PACK")

    return tune.with_resources(tune.with_parameters(run_trial, base=base, prompts=prompts), resources)


