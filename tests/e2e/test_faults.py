"""Processes that die mid-run (one-step-off rollouts, so batches are in flight when they do): Ray restarts the rollout and reward actors, the learner re-syncs the
restarted rollout actor's adapter and sends its batch again; a dead learner rank makes Ray Train
restart the learner group from the latest checkpoint, and the prompt ledger shows every prompt
trained once. A killed driver's run resumes with the same command, and a driver stopped with
Ctrl-C checkpoints the iteration it was in. Real processes, killed by pid."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time

import pytest

from rlaf_ray.config import from_dict
from rlaf_ray.run_log import read_ledger, read_metrics
from rlaf_ray.storage import checkpoint_dir_name
from rlaf_ray.train import train
from tests.conftest import base_config

ITERATIONS = 6


def wait_until(condition, timeout: float = 300, alive=lambda: True) -> bool:
    """Poll ``condition()`` until it holds (False after ``timeout`` or once ``alive()`` fails)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or not alive():
            return False
        time.sleep(0.2)
    return True


def lines_reached(path, lines: int, timeout: float = 300, alive=lambda: True) -> bool:
    """Wait until the file has ``lines`` lines."""
    return wait_until(lambda: path.is_file() and len(path.read_text().splitlines()) >= lines, timeout, alive)


def kill_roles_after(run_dir, iterations: int, killed: dict) -> None:
    """Once ``iterations`` are in metrics.jsonl, SIGKILL the rollout and the reward actor (early:
    the iterations left must outlast the kill, or the test would race the run's end)."""
    import ray

    if not lines_reached(run_dir / "metrics.jsonl", iterations):
        return
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
    if not lines_reached(ledger, iterations):
        return
    killed["ledger_before"] = ledger.read_text()
    workers = [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]
    os.kill(workers[-1].pid, signal.SIGKILL)
    killed["learner"] = workers[-1].pid


@pytest.mark.slow
def test_run_survives_killed_actors_and_learner_and_trains_each_prompt_once(ray_local, policy_path, classifier_path,
                                                                            tmp_path):
    # One-step-off rollouts: the kills also hit batches in flight.
    config = base_config(policy_path, classifier_path, tmp_path, run={"name": "faults", "checkpoint_every": 2,
                                                                      "max_failures": 1},
                         ppo={"num_iterations": ITERATIONS, "max_staleness": 1})
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
    # the staleness bound holds, and was used (a restart or re-sync starts afresh at 0)
    assert all(m["offpolicy/staleness_max"] <= 1 for m in metrics)
    assert sum(m["offpolicy/staleness_max"] == 1 for m in metrics) >= 2

    # The prompt ledger: every iteration once, the iterations redone after the learner's restart
    # trained the very prompts the lost ones had, and no prompt twice.
    ledger = read_ledger(run_dir)
    assert [line["iteration"] for line in ledger] == list(range(1, ITERATIONS + 1))
    before = [json.loads(line) for line in killed["ledger_before"].splitlines()]
    assert ledger[:len(before)] == before
    digests = [d for line in ledger for rank in line["prompts"] for d in rank]
    assert len(digests) == ITERATIONS * config["ppo"]["batch_size"] and len(set(digests)) == len(digests)


@pytest.mark.slow
def test_a_killed_or_stopped_driver_resumes_with_the_same_command(no_ray, policy_path, classifier_path, tmp_path):
    """`rlaf-ray train` with its driver SIGKILLed mid-run (its local Ray goes with it, as a lost
    machine's would): the same command resumes from the latest checkpoint and redoes the lost
    iterations on the same prompts. Then Ctrl-C (SIGINT) to that driver: the iteration in progress
    finishes and is checkpointed although no checkpoint is due, the exit status is 130 and the
    message gives the command to resume. Every iteration is logged once, every prompt trained
    once, and the adapter of the last checkpoint generates. (Not run here, to save a third start:
    resuming from that Ctrl-C checkpoint, which is read as any other checkpoint is.)"""
    import subprocess
    import sys

    import psutil
    import yaml

    from tests.conftest import REPO

    iterations, every = 12, 4
    config = base_config(policy_path, classifier_path, tmp_path, run={"name": "driver", "checkpoint_every": every},
                         ppo={"num_iterations": iterations},
                         resources={"learner": {"num_workers": 1, "num_cpus": 0.5}})  # one rank: the driver is tested
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "rlaf_ray", "train", "--config", str(path)]
    run_dir = tmp_path / "results" / "driver"
    ledger = run_dir / "prompts.jsonl"

    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    # Ray Train resumes from the checkpoints its controller has registered (its snapshot file), a
    # poll after the learner reported one: killed once checkpoint `every` is registered there and
    # the iteration after it is logged, so that at least one iteration is lost.
    registered = run_dir / "checkpoint_manager_snapshot.json"
    try:
        assert lines_reached(ledger, every + 1, alive=lambda: first.poll() is None), "the first run ended early"
        assert wait_until(lambda: registered.is_file() and checkpoint_dir_name(every) in registered.read_text(),
                          timeout=120, alive=lambda: first.poll() is None)
        before = read_ledger(run_dir)
        # A lost machine: the driver and every process of its local Ray at once, all gone before
        # the second run starts. (Ray starts its workers in process groups of their own: killed
        # with the driver's group only, a learner can outlive it by an iteration and log it.)
        driver = psutil.Process(first.pid)
        processes = [driver, *driver.children(recursive=True)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        assert not psutil.wait_procs(processes, timeout=60)[1]
        first.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # whatever of its group is left, if the test failed early
    assert every < len(before) < 2 * every  # iterations after the checkpoint at `every` were lost

    resumed_at = time.time()
    with open(tmp_path / "second.out", "w") as out, open(tmp_path / "second.err", "w") as err:
        second = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err, start_new_session=True)
        try:
            # Stopped once it has redone an iteration: mid-way between two due checkpoints.
            assert wait_until(lambda: any(m["time/finished_at"] > resumed_at for m in read_metrics(run_dir)),
                              alive=lambda: second.poll() is None), "the second run ended early"
            os.kill(second.pid, signal.SIGINT)
            assert second.wait(timeout=180) == 130
        finally:
            with contextlib.suppress(ProcessLookupError):  # a clean stop leaves none of its processes
                os.killpg(second.pid, signal.SIGKILL)
    assert "continuing the train run" in (tmp_path / "second.out").read_text()
    stopped_at = len(read_metrics(run_dir))
    assert every < stopped_at < 2 * every  # stopped before the next checkpoint that was due...
    assert (run_dir / checkpoint_dir_name(stopped_at)).is_dir()  # ...and checkpointed there
    assert not (run_dir / "final").exists()
    message = (tmp_path / "second.err").read_text()
    assert f"interrupted after iteration {stopped_at} of {iterations}, checkpoint written" in message
    assert f"rlaf-ray train --config {path}" in message

    metrics = read_metrics(run_dir)
    assert [m["iteration"] for m in metrics] == list(range(1, stopped_at + 1))
    # resumed from the checkpoint at `every`: the iterations after it are the second run's
    assert [m["time/finished_at"] < resumed_at for m in metrics] == [True] * every + [False] * (stopped_at - every)
    after = read_ledger(run_dir)
    assert [line["iteration"] for line in after] == list(range(1, stopped_at + 1))
    # Redone iterations trained the lost ones' prompts: every iteration both runs logged (the first
    # may have logged more lost iterations than the second redid before its Ctrl-C, or fewer; both
    # logged at least one past the checkpoint, asserted above).
    both = min(len(before), len(after))
    assert after[:both] == before[:both]
    digests = [d for line in after for rank in line["prompts"] for d in rank]
    assert len(set(digests)) == len(digests) == stopped_at * config["ppo"]["batch_size"]

    from rlaf_ray.config import GenerationSettings, ModelSettings
    from rlaf_ray.export import generate

    adapter = run_dir / checkpoint_dir_name(stopped_at) / "adapter"
    responses = generate(ModelSettings(name_or_path=policy_path), str(adapter),
                         ["#Person1#: Hello.\n#Person2#:"], GenerationSettings(max_new_tokens=6, min_new_tokens=6))
    assert len(responses) == 1 and responses[0].strip()
