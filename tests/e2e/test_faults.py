"""Role actors that die mid-run: Ray restarts them, the learner re-syncs the restarted rollout
actor's adapter and sends its batch again, and the run finishes every iteration. Real processes,
killed by pid with SIGKILL."""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import pytest

from rlaf_ray.config import from_dict
from rlaf_ray.run_log import read_metrics
from rlaf_ray.train import train
from tests.conftest import base_config

ITERATIONS = 5


def kill_roles_after(run_dir, iterations: int, killed: dict) -> None:
    """Once ``iterations`` are in metrics.jsonl, SIGKILL the rollout and the reward actor (early:
    the iterations left must outlast the kill, or the test would race the run's end)."""
    import ray

    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= iterations):
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)
    for role in ("rollout", "reward"):
        actor = ray.get_actor(f"rlaf:{run_dir.name}:{role}-0")
        pid = ray.get(actor.ready.remote())["pid"]
        os.kill(pid, signal.SIGKILL)
        killed[role] = pid


@pytest.mark.slow
def test_run_survives_killed_rollout_and_reward_actors(ray_local, policy_path, classifier_path, tmp_path):
    config = base_config(policy_path, classifier_path, tmp_path, run={"name": "faults", "checkpoint_every": ITERATIONS},
                         ppo={"num_iterations": ITERATIONS})
    run_dir = tmp_path / "results" / "faults"
    killed: dict[str, int] = {}
    killer = threading.Thread(target=kill_roles_after, args=(run_dir, 1, killed), daemon=True)
    killer.start()
    train(from_dict(config))
    killer.join(timeout=60)

    assert set(killed) == {"rollout", "reward"}, "the actors were not killed mid-run"
    for pid in killed.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # those processes are gone: the run finished on restarted actors
    metrics = read_metrics(run_dir)
    assert [m["iteration"] for m in metrics] == list(range(1, ITERATIONS + 1))
    assert all(math.isfinite(m["reward/mean"]) and m["reward/non_finite"] == 0 for m in metrics)
    assert metrics[-1]["policy/version"] == ITERATIONS
