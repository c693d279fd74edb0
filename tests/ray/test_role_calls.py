"""A learner's calls to its role actors: timeouts name the actor, restarts are waited for, an actor
with no restarts left is one line. Real actors, killed by pid."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rlaf_ray.roles.actor import RoleActor
from rlaf_ray.roles.calls import _answer, _wait_until_back


class Sleeper(RoleActor):
    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


def test_a_call_past_the_timeout_names_the_actor_and_the_setting(ray_local):
    actor = ray_local.remote(Sleeper).options(num_cpus=0).remote()
    with pytest.raises(RuntimeError) as err:
        _answer(actor.nap.remote(30), 0.5, "reward actor 0", "score")
    assert str(err.value) == "reward actor 0: no answer to score in 0.5 s (run.role_timeout_s)"
    ray_local.kill(actor)


@pytest.mark.parametrize("restarts", [1, 0])
def test_a_killed_actor_is_waited_for_until_restarted_or_named_when_it_cannot_be(ray_local, restarts):
    actor = ray_local.remote(Sleeper).options(num_cpus=0, max_restarts=restarts).remote()
    pid = ray_local.get(actor.ready.remote())["pid"]
    os.kill(pid, signal.SIGKILL)
    if restarts:
        _wait_until_back(actor, 60, "rollout actor 0")
        assert ray_local.get(actor.ready.remote())["pid"] != pid  # a new process serves
        assert ray_local.get(actor.nap.remote(0)) == 0
    else:
        with pytest.raises(RuntimeError, match=r"^rollout actor 0: died with no restarts left"):
            _wait_until_back(actor, 60, "rollout actor 0")
    ray_local.kill(actor)


class CannotLoad(RoleActor):
    def __init__(self):
        raise OSError("reward.model_name_or_path: no model at /nowhere")


class NeverEnds:
    """A learner group that does not finish in the test's time: a ``fit_stoppable`` that waited
    for it would return after 120 s, and the test would fail."""

    def __init__(self):
        self.released = threading.Event()

    def fit(self):
        self.released.wait(timeout=120)


def test_a_role_that_cannot_start_ends_the_fit_with_its_own_error(ray_local):
    """The learner group starts while the role actors load their models (``train.start_roles``);
    an actor that fails to load ends the run at once with its error, not as a learner's later."""
    from rlaf_ray.interrupt import fit_stoppable, start_stop_request

    loads = ray_local.remote(Sleeper).options(num_cpus=0).remote()
    fails = ray_local.remote(CannotLoad).options(num_cpus=0).remote()
    trainer, stop = NeverEnds(), start_stop_request()
    try:
        with pytest.raises(ray_local.exceptions.RayActorError, match="no model at /nowhere"):
            fit_stoppable(trainer, stop, [loads.ready.remote(), fails.ready.remote()])
    finally:
        trainer.released.set()
        for actor in (loads, fails, stop):
            ray_local.kill(actor)
