"""Ctrl-C during a run: the learners finish the iteration in progress, checkpoint it and stop;
the driver then says how to resume and exits non-zero. A second Ctrl-C abandons the iteration
(the latest periodic checkpoint stands).

The driver's signal handler cannot reach the learners directly (they are Ray Train workers,
maybe on other nodes, and Ray's processes block SIGINT), so it sets a flag in a small actor that
rank 0 reads once per iteration and shares with the other ranks.
"""

from __future__ import annotations

import signal
import sys
import threading


class RunInterrupted(Exception):
    """The run stopped on request, checkpointed after ``iteration`` of ``total``."""

    def __init__(self, iteration: int, total: int):
        self.iteration, self.total = iteration, total
        super().__init__(f"interrupted after iteration {iteration} of {total}")


class StopRequest:
    """The flag, as an actor (``start_stop_request``)."""

    def __init__(self):
        self.requested = False

    def request(self) -> None:
        self.requested = True

    def is_requested(self) -> bool:
        return self.requested


def start_stop_request():
    import ray  # here, not at the top: the CLI imports this module and must answer at once

    return ray.remote(num_cpus=0)(StopRequest).remote()


def stop_agreed(stop, rank: int, device) -> bool:
    """Whether every rank leaves the loop after this iteration: rank 0's reading of the flag,
    shared by an all-reduce (ranks that read it themselves could disagree by one iteration, and
    the one that left would hang the others' next collective)."""
    import ray

    from rlaf_ray.ppo.distributed import global_sums

    asked = float(rank == 0 and stop is not None and ray.get(stop.is_requested.remote()))
    return global_sums({"stop": asked}, device)["stop"] > 0


def fit_stoppable(trainer, stop, starting: list = ()):
    """``trainer.fit()`` with Ctrl-C ours: the first SIGINT asks the learners to stop after the
    iteration in progress, a second one raises ``KeyboardInterrupt`` at once. Ray Train installs
    its own SIGINT handler (abort the run, losing the iteration) when ``fit`` runs on the main
    thread, so ``fit`` runs on another and the main thread waits for it. Only the main thread can
    handle signals: elsewhere (a Tune trial) ``fit`` runs as it is, and Tune handles Ctrl-C.

    ``starting``: the role actors' ``ready`` calls. On the main thread they are awaited beside the
    fit, so the learner group starts while the actors load their models; one that fails ends the
    run at once with the actor's own error, not later as a learner's. Elsewhere they are awaited
    before the fit."""
    import ray

    if threading.current_thread() is not threading.main_thread():
        ray.get(list(starting))
        return trainer.fit()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # noqa: BLE001 - re-raised on the main thread below
            outcome["error"] = err

    def handler(signum, frame):
        signal.signal(signal.SIGINT, previous)
        stop.request.remote()
        print("\n[rlaf] Ctrl-C: stopping after this iteration and writing a checkpoint "
              "(Ctrl-C again to abandon the iteration)", file=sys.stderr, flush=True)

    fitting = threading.Thread(target=run, name="rlaf-fit", daemon=True)
    previous = signal.signal(signal.SIGINT, handler)
    pending = list(starting)
    try:
        fitting.start()
        while fitting.is_alive():
            fitting.join(0.2)  # short waits: the main thread runs signal handlers between them
            pending = still_starting(pending)
    finally:
        signal.signal(signal.SIGINT, previous)
    if "error" in outcome:
        still_starting(pending)  # a role that could not start: its own error says why the learner failed
        raise outcome["error"]
    return outcome["result"]


def still_starting(pending: list) -> list:
    """The ``ready`` calls not answered yet; raises the error of an actor that could not start."""
    if not pending:
        return pending
    import ray

    started, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
    ray.get(started)
    return pending


def stopped_early(stop) -> bool:
    import ray

    return bool(ray.get(stop.is_requested.remote()))
