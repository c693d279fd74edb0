"""Will the roles fit on this Ray cluster? Checked before any actor starts, so that a job whose
resources no node can satisfy fails with a message instead of waiting forever; and is the output
directory shared when the cluster has several nodes?"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import ray
from ray.train import ScalingConfig
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rlaf_ray.config import ConfigError, RLAFConfig, RoleResources
from rlaf_ray.storage import is_uri

ROLES = ("learner", "rollout", "reward")


def worker_demand(res: RoleResources) -> dict[str, float]:
    """What one worker of a role asks Ray for (zero amounts left out)."""
    demand = {"CPU": res.num_cpus, "GPU": res.num_gpus, **res.resources}
    return {k: float(v) for k, v in demand.items() if v}


def scaling_config(res: RoleResources) -> ScalingConfig:
    per_worker = {"CPU": res.num_cpus, **res.resources}
    if res.num_gpus:
        per_worker["GPU"] = res.num_gpus
    return ScalingConfig(num_workers=res.num_workers, use_gpu=res.num_gpus > 0,
                         resources_per_worker=per_worker)


def format_resources(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def placement_problems(cfg: RLAFConfig, nodes: list[dict[str, float]], roles: tuple[str, ...] = ROLES) -> list[str]:
    """One line per role that no node can host, and one if the roles exceed the cluster in total.
    ``nodes``: the total resources of each alive node."""
    problems = []
    totals: dict[str, float] = {}
    for node in nodes:
        for key, value in node.items():
            totals[key] = totals.get(key, 0.0) + value
    need: dict[str, float] = {}
    offered = "; ".join(format_resources({k: v for k, v in n.items() if not k.startswith(("node:", "memory", "object_store"))})
                        for n in nodes) or "none"
    for role in roles:
        res: RoleResources = getattr(cfg.resources, role)
        demand = worker_demand(res)
        for key, value in demand.items():
            need[key] = need.get(key, 0.0) + value * res.num_workers
        if not any(all(node.get(k, 0.0) >= v for k, v in demand.items()) for node in nodes):
            problems.append(f"resources.{role}: no node can host one {role} worker with {format_resources(demand)}; "
                            f"the nodes offer {offered}")
    short = {k: v for k, v in need.items() if v > totals.get(k, 0.0) + 1e-9}
    if short and not problems:
        problems.append(f"resources: the roles need {format_resources(need)} in total, more than the cluster's "
                        f"{format_resources({k: totals.get(k, 0.0) for k in need})}")
    return problems


def alive_node_resources() -> list[dict[str, float]]:
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def role_bundles(cfg: RLAFConfig, roles: tuple[str, ...] = ROLES) -> list[dict[str, float]]:
    """One bundle per worker of the roles: what the autoscaler is asked to make room for."""
    bundles = []
    for role in roles:
        res: RoleResources = getattr(cfg.resources, role)
        if demand := worker_demand(res):
            bundles += [demand] * res.num_workers
    return bundles


@contextmanager
def placed(*configs: RLAFConfig, roles: tuple[str, ...] = ROLES):
    """``ensure_placement`` for each config (a run's, or each probe of a search), and the
    autoscaler request it made withdrawn on leaving, so that the cluster can scale down again."""
    requested = False
    try:
        for cfg in configs:
            requested = ensure_placement(cfg, roles) or requested
        yield
    finally:
        if requested:
            release_request()


def ensure_placement(cfg: RLAFConfig, roles: tuple[str, ...] = ROLES) -> bool:
    """Fail fast when the roles cannot be placed. With ``run.resource_wait_s`` > 0, first ask the
    autoscaler for the roles' bundles (it adds nodes only for demand it is told about: actors
    not yet created are none) and wait for them, reporting what is still missing. Returns whether
    a request was made (``placed`` withdraws it)."""
    problems = placement_problems(cfg, alive_node_resources(), roles)
    if not problems:
        return False
    if cfg.run.resource_wait_s <= 0:
        raise ConfigError(problems)
    from ray.autoscaler.sdk import request_resources

    bundles = role_bundles(cfg, roles)
    request_resources(bundles=bundles)
    start = time.monotonic()
    deadline, next_note = start + cfg.run.resource_wait_s, start
    while problems:
        now = time.monotonic()
        if now >= deadline:
            release_request()
            raise ConfigError([f"{problems[0]} (waited run.resource_wait_s={cfg.run.resource_wait_s:g} s "
                               f"for the autoscaler)", *problems[1:]])
        if now >= next_note:
            print(f"[rlaf] asked the autoscaler for {len(bundles)} worker bundles; "
                  f"{int(now - start)} s of {cfg.run.resource_wait_s:g} s: {problems[0]}", flush=True)
            next_note = now + 30
        time.sleep(1)
        problems = placement_problems(cfg, alive_node_resources(), roles)
    print(f"[rlaf] the cluster has room for the roles after {time.monotonic() - start:.0f} s", flush=True)
    return True


def release_request() -> None:
    """Withdraw this run's standing request to the autoscaler."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[])


@ray.remote(num_cpus=0)
def _sees(path: str, token: str) -> bool:
    marker = Path(path)
    return marker.is_file() and marker.read_text() == token


def ensure_shared_output(output_dir: str) -> None:
    """On a multi-node cluster, every node must see ``output_dir`` (checkpoints are written by
    learners wherever they run, reports are read back by the driver): probe it with a marker.
    A URI is the same place from every node (whether it can be written was probed before Ray
    started: ``run_guard.check_run_dir``, ``tune_search``)."""
    if is_uri(output_dir):
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = directory / f".rlaf-shared-{token}"
    marker.write_text(token)
    try:
        seen = ray.get([_sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(str(marker), token) for n in nodes])
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
    if blind:
        raise ConfigError([f"run.output_dir {output_dir!r}: not visible from node(s) {', '.join(blind)}; "
                           "a multi-node run needs a directory shared by all nodes (NFS/EFS/Lustre mount)"])
