"""What a learner rank asks of its role actors, and how it rides out their deaths.

``generate_and_score`` sends one batch to this rank's rollout actor and the rollout's ObjectRef
on to its reward actor. Both roles are restarted by Ray when their process dies
(``run.role_restarts``, see ``train.start_roles``): Ray resends a stateless reward actor's calls
itself; a restarted rollout actor comes back with a fresh adapter, so the rank waits for it,
gives it the current adapter and sends the batch again. Every answer is awaited at most
``run.role_timeout_s``, and a failure names the role and the actor.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from dataclasses import dataclass

import ray

from rlaf_ray.config import RLAFConfig


@dataclass
class RankRoles:
    """The rollout and reward actor this rank calls, and their indices (for messages)."""

    rollout: object
    reward: object
    rollout_index: int
    reward_index: int


def generate_and_score(cfg: RLAFConfig, roles: RankRoles, batch: dict, seed: int, version: int,
                       resync) -> tuple[dict, dict]:
    """generate -> score: the rollout goes to the reward actor as an ObjectRef. Each prompt is
    sampled ``ppo.samples_per_prompt`` times, its responses side by side (the groups of
    ``ppo/groups.py``). The rollout must have used adapter ``version``.

    A rollout actor whose process died comes back (Ray restarts it) with a fresh adapter:
    ``resync`` gives it this rank's adapter (every rank holds the same one) and the call is sent
    again with the same seed, up to ``run.role_restarts`` times. Ray itself resends a restarted
    reward actor's calls. Each answer is awaited at most ``run.role_timeout_s``."""
    prompts = [str(p) for p in batch["prompt"] for _ in range(cfg.ppo.samples_per_prompt)]
    timeout, name = cfg.run.role_timeout_s, f"rollout actor {roles.rollout_index}"
    for attempt in itertools.count():
        rollout_ref = roles.rollout.generate.remote(prompts, seed)
        scored_ref = roles.reward.score.remote(rollout_ref)
        try:
            out = _answer(rollout_ref, timeout, name, "generate")
        except ray.exceptions.RayActorError as err:
            problem = f"died ({first_line(err)})"
            _discard(scored_ref)
        else:
            if out["version"] == version:
                return out, _scores(scored_ref, timeout, roles.reward_index, cfg.run.role_restarts)
            problem = f"used adapter version {out['version']}, expected {version} (restarted)"
        if attempt == cfg.run.role_restarts:
            raise RuntimeError(f"{name}: {problem}; no re-syncs left (run.role_restarts={cfg.run.role_restarts})")
        print(f"[rlaf] {name} {problem}: re-syncing its adapter, sending the batch again",
              file=sys.__stdout__, flush=True)
        _wait_until_back(roles.rollout, timeout, name)
        resync()


def first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _scores(ref, timeout: float | None, index: int, restarts: int) -> dict:
    try:
        return _answer(ref, timeout, f"reward actor {index}", "score")
    except ray.exceptions.RayActorError as err:  # Ray resent its calls until no restart was left
        raise RuntimeError(f"reward actor {index}: died with no restarts left (run.role_restarts={restarts}): "
                           f"{first_line(err)}") from err


def _discard(ref) -> None:
    """Collect the failed result of a call whose input died with the rollout actor, so Ray does not
    report it as an unhandled error."""
    try:
        ray.get(ref, timeout=60)
    except ray.exceptions.RayError:
        pass


def _wait_until_back(actor, timeout: float | None, name: str) -> None:
    """Until Ray has restarted the actor (calls meanwhile fail at once as 'unavailable')."""
    deadline = time.monotonic() + (timeout if timeout is not None else math.inf)
    while True:
        try:
            ray.get(actor.ready.remote())
            return
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: not back within {timeout:g} s of dying (run.role_timeout_s)") from None
            time.sleep(0.5)
        except ray.exceptions.ActorDiedError as err:
            raise RuntimeError(f"{name}: died with no restarts left (run.role_restarts): {first_line(err)}") from err


def _answer(ref, timeout: float | None, actor: str, call: str):
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise RuntimeError(f"{actor}: no answer to {call} in {timeout:g} s (run.role_timeout_s)") from None
