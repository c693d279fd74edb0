"""Processes that die mid-run: Ray restarts the rollout and reward actors, the learner re-syncs the
restarted rollout actor's adapter and sends its batch again; a dead learner rank makes Ray Train
restart the learner group from the latest checkpoint, and the prompt ledger shows every prompt
trained once. Real processes, killed by pid with SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time

import pytest

from rlaf_ray.config import from_dict
from rlaf_ray.run_log import read_ledger, read_metrics
from rlaf_ray.train import train
from tests.conftest import base_config

ITERATIONS = 6


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


def kill_a_learner_after(run_dir, iterations: int, killed: dict) -> None:
    """Once ``iterations`` are in the prompt ledger, keep what it says and SIGKILL one learner
    rank (a Ray Train worker process)."""
    import psutil

    ledger = run_dir / "prompts.jsonl"
    deadline = time.monotonic() + 300
    while not (ledger.is_file() and len(ledger.read_text().splitlines()) >= iterations):
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)
    killed["ledger_before"] = ledger.read_text()
    workers = [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]
    os.kill(workers[-1].pid, signal.SIGKILL)
    killed["learner"] = workers[-1].pid


@pytest.mark.slow
def test_run_survives_killed_actors_and_learner_and_trains_each_prompt_once(ray_local, policy_path, classifier_path,
                                                                            tmp_path):
    config = base_config(policy_path, classifier_path, tmp_path, run={"name": "faults", "checkpoint_every": 2,
                                                                      "max_failures": 1},
                         ppo={"num_iterations": ITERATIONS})
    run_dir = tmp_path / "results" / "faults"
    killed: dict = {}
    killers = [threading.Thread(target=kill_roles_after, args=(run_dir, 1, killed), daemon=True),
               threading.Thread(target=kill_a_learner_after, args=(run_dir, 3, killed), daemon=True)]
    for killer in killers:
        killer.start()
    train(from_dict(config))
    for killer in killers:
        killer.join(timeout=60)

    assert {"rollout", "reward", "learner"} <= set(killed), "the processes were not killed mid-run"
    for role in ("rollout", "reward", "learner"):
        with pytest.raises(ProcessLookupError):
            os.kill(killed[role], 0)  # those processes are gone: the run finished on restarted ones
    metrics = read_metrics(run_dir)
    assert [m["iteration"] for m in metrics] == list(range(1, ITERATIONS + 1))
    assert all(math.isfinite(m["reward/mean"]) and m["reward/non_finite"] == 0 for m in metrics)
    assert metrics[-1]["policy/version"] == ITERATIONS

    # The prompt ledger: every iteration once, the iterations redone after the learner's restart
    # trained the very prompts the lost ones had, and no prompt twice.
    ledger = read_ledger(run_dir)
    assert [line["iteration"] for line in ledger] == list(range(1, ITERATIONS + 1))
    before = [json.loads(line) for line in killed["ledger_before"].splitlines()]
    assert ledger[:len(before)] == before
    digests = [d for line in ledger for rank in line["prompts"] for d in rank]
    assert len(digests) == ITERATIONS * config["ppo"]["batch_size"] and len(set(digests)) == len(digests)
