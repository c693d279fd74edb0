"""What a learner rank asks of its role actors, and how it rides out their deaths.

The actors are one pool for all ranks: ``routes`` splits each rank's batch into chunks, one per
rollout actor it uses, so that every actor gets the same share of all ranks' work, whatever the
numbers of learners and actors (``rollout_routes``). ``send_batch`` sends each chunk to its
rollout actor and the rollout's ObjectRef on to its reward actor, all chunks at once;
``collect_batch`` awaits them. Both roles are restarted by Ray when their process dies
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


def rollout_routes(rank: int, world: int, n_rollout: int, n_reward: int) -> list[tuple[int, int]]:
    """``(rollout actor, reward actor)`` for each chunk of this rank's batch. A rank splits its
    batch into ``m = n_rollout / gcd(n_rollout, world)`` chunks on distinct actors, rank by rank
    round the pool: every rollout actor then serves ``world * m / n_rollout`` equal chunks per
    iteration (2 learners on 1 actor: both whole batches on it; on 2: one each; on 3: each rank's
    batch in thirds over all three), and the reward actors take the chunks round the same way."""
    m = n_rollout // math.gcd(n_rollout, world)
    return [((rank * m + c) % n_rollout, (rank * m + c) % n_reward) for c in range(m)]


@dataclass
class RankRoles:
    """The pool of rollout and reward actors, and this rank's routes through it."""

    rollout: list
    reward: list
    routes: list[tuple[int, int]]


# Chunk c of a rank's batch samples with seed + c * CHUNK_SEED (chunk 0: the rank's own seed).
CHUNK_SEED = 104_729


@dataclass
class InFlight:
    """A batch sent to the pool and not yet collected: its chunks and their refs."""

    chunks: list[tuple[list[str], tuple[int, int], int]]  # (prompts, route, seed)
    sent: list[tuple]  # (rollout ref, scores ref) per chunk


def send_batch(cfg: RLAFConfig, roles: RankRoles, batch: dict, seed: int) -> InFlight:
    """generate -> score, chunk by chunk on this rank's routes, all chunks sent before any is
    awaited (``collect_batch``); each rollout goes to its reward actor as an ObjectRef. Each
    prompt is sampled ``ppo.samples_per_prompt`` times, its responses side by side in one chunk
    (the groups of ``ppo/groups.py``). With ``ppo.max_staleness`` > 0 the rollouts also return
    their tokens' log-probs (the behaviour policy of the off-policy correction).

    A rollout actor whose process died comes back (Ray restarts it) with a fresh adapter:
    ``resync(actor)`` gives it this rank's adapter (every rank holds the same one) and the chunk is
    sent again with the same seed, up to ``run.role_restarts`` times. Ray itself resends a
    restarted reward actor's calls. Each answer is awaited at most ``run.role_timeout_s``."""
    k = cfg.ppo.samples_per_prompt
    rows = list(batch["prompt"])
    size = math.ceil(len(rows) / len(roles.routes))
    chunks = [([str(p) for p in rows[start:start + size] for _ in range(k)], route, seed + c * CHUNK_SEED)
              for c, (start, route) in enumerate(zip(range(0, len(rows), size), roles.routes))]
    return InFlight(chunks, [_send(cfg, roles, route, prompts, chunk_seed) for prompts, route, chunk_seed in chunks])


def collect_batch(cfg: RLAFConfig, roles: RankRoles, flight: InFlight, version: int, resync) -> tuple[dict, dict]:
    """The answers of a batch sent with ``send_batch`` when the pool held adapter ``version``
    (a chunk regenerated after its actor's restart uses a newer one)."""
    answers = [_chunk(cfg, roles, route, prompts, chunk_seed, version, resync, first)
               for (prompts, route, chunk_seed), first in zip(flight.chunks, flight.sent)]
    return merge_rollouts([a[0] for a in answers]), merge_scores([a[1] for a in answers])


def _send(cfg: RLAFConfig, roles: RankRoles, route: tuple[int, int], prompts: list[str], seed: int) -> tuple:
    # Behaviour log-probs only where a stale sample needs correcting (they cost the full scores).
    rollout_ref = roles.rollout[route[0]].generate.remote(prompts, seed, cfg.ppo.max_staleness > 0)
    return rollout_ref, roles.reward[route[1]].score.remote(rollout_ref)


def _chunk(cfg: RLAFConfig, roles: RankRoles, route: tuple[int, int], prompts: list[str], seed: int,
           version: int, resync, sent: tuple) -> tuple[dict, dict]:
    """One chunk's answers, riding out its rollout actor's death (see ``send_batch``): the
    rollout must have used adapter ``version`` or, regenerated after a re-sync, a newer one."""
    timeout, name = cfg.run.role_timeout_s, f"rollout actor {route[0]}"
    actor = roles.rollout[route[0]]
    for attempt in itertools.count():
        rollout_ref, scored_ref = sent if attempt == 0 else _send(cfg, roles, route, prompts, seed)
        try:
            out = _answer(rollout_ref, timeout, name, "generate")
        except ray.exceptions.RayActorError as err:
            problem = f"died ({first_line(err)})"
            _discard(scored_ref)
        else:
            if out["version"] >= version:
                return out, _scores(scored_ref, timeout, route[1], cfg.run.role_restarts)
            problem = f"used adapter version {out['version']}, expected {version} (restarted)"
        if attempt == cfg.run.role_restarts:
            raise RuntimeError(f"{name}: {problem}; no re-syncs left (run.role_restarts={cfg.run.role_restarts})")
        print(f"[rlaf] {name} {problem}: re-syncing its adapter, sending the batch again",
              file=sys.__stdout__, flush=True)
        _wait_until_back(actor, timeout, name)
        resync(actor)


# Per-response fields of a rollout and of its scores, joined chunk after chunk; the rest are
# per call: the slowest chunk's seconds (they ran side by side), the largest peak memory.
ROLLOUT_LISTS = ("prompts", "prompt_ids", "response_ids", "responses", "ended")


def merge_rollouts(outs: list[dict]) -> dict:
    """One rollout of the chunks; ``versions``: the adapter version of each response."""
    merged = {key: [item for out in outs for item in out[key]] for key in ROLLOUT_LISTS}
    merged["versions"] = [out["version"] for out in outs for _ in out["response_ids"]]
    merged["logprobs"] = ([lp for out in outs for lp in out["logprobs"]]
                          if all(out.get("logprobs") is not None for out in outs) else None)
    merged.update(version=min(o["version"] for o in outs), max_new_tokens=max(o["max_new_tokens"] for o in outs),
                  seconds=max(o["seconds"] for o in outs), peak_memory_mib=max(o["peak_memory_mib"] for o in outs))
    return merged


def merge_scores(scored: list[dict]) -> dict:
    return {"scores": [s for one in scored for s in one["scores"]], "seconds": max(s["seconds"] for s in scored),
            "peak_memory_mib": max(s["peak_memory_mib"] for s in scored)}


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
