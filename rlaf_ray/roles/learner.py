"""Learner role: the PPO loop on every Ray Train rank.

The loop names the roles in order: ``generate`` (rollout actor) -> ``score`` (reward actor, fed
the rollout's ObjectRef directly) -> ``update`` (local PPO step, gradients all-reduced by DDP)
-> ``sync`` (rank 0 puts the adapter in the object store once; every rollout actor loads it).
What a checkpoint holds: ``rlaf_ray.roles.checkpoints``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint
from ray.train.torch import prepare_model
from trl.trainer.utils import pad

from rlaf_ray import world
from rlaf_ray.config import RLAFConfig
from rlaf_ray.determinism import use_deterministic_algorithms
from rlaf_ray.devices import peak_memory_mib
from rlaf_ray.interrupt import stop_agreed
from rlaf_ray.models.policy import (
    PolicyWithValueHead,
    adapter_state_dict,
    eos_token_id,
    init_eva,
    learner_model,
    load_tokenizer,
    trainable_parameters,
)
from rlaf_ray.ppo.batch import collate
from rlaf_ray.ppo.distributed import global_sums
from rlaf_ray.ppo.update import PPOLearner
from rlaf_ray.roles.calls import (
    InFlight,
    RankRoles,
    collect_batch,
    rollout_routes,
    send_batch,
)
from rlaf_ray.roles.checkpoints import (
    LoopState,
    check_free_space,
    checkpoint_bytes,
    restore,
    save_adapter,
    save_checkpoint,
)
from rlaf_ray.run_log import RunLog
from rlaf_ray.storage import checkpoint_dir_name, write_text_atomic
from rlaf_ray.timing import timed


@dataclass
class Flight:
    """A batch sent to the pool: its place in the data, the adapter version that samples it."""

    epoch: int
    batches_in_epoch: int
    batch: dict
    version: int
    calls: InFlight


# ----------------------------------------------------------------------------------------------
# The loop


def learner_loop(loop_config: dict) -> None:
    """Ray Train's per-rank function. ``loop_config``: the run's config, the role actors (an
    ObjectRef of the rollout and the reward actors' lists), the number of prompts
    (``num_prompts``) and the prompts a new EVA adapter starts from (``eva_prompts``, else empty)."""
    cfg: RLAFConfig = loop_config["config"]
    rollout_workers, reward_workers = ray.get(loop_config["roles"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    roles = RankRoles(rollout_workers, reward_workers, rollout_routes(
        rank, context.get_world_size(), len(rollout_workers), len(reward_workers)))
    learner, state = build_learner(cfg, rollout_workers, loop_config["eva_prompts"])
    batches = prompt_batches(ray.train.get_dataset_shard("train"), cfg.ppo.prompts_per_iteration // learner.world,
                             state, seed=cfg.data.seed * 7919 + rank)
    ahead: deque[Flight] = deque()  # batches sent to the pool, oldest first
    while state.iteration < cfg.ppo.num_iterations:
        timings: dict[str, float] = {}
        with timed("iteration", timings):
            # This iteration's batch and up to max_staleness more are in flight, each sampled by
            # the adapter the pool holds when it is sent (this update's, version state.iteration).
            while len(ahead) <= cfg.ppo.max_staleness and state.iteration + len(ahead) < cfg.ppo.num_iterations:
                epoch, done, batch = next(batches)
                seed = iteration_seed(cfg, state.iteration + len(ahead), rank)
                ahead.append(Flight(epoch, done, batch, state.iteration, send_batch(cfg, roles, batch, seed)))
            flight = ahead.popleft()
            state.epoch, state.batches_in_epoch = flight.epoch, flight.batches_in_epoch
            state.in_flight = [[f.epoch, f.batches_in_epoch] for f in ahead]  # regenerated on resume
            with timed("rollout_wall", timings):
                out, scored = collect_batch(
                    cfg, roles, flight.calls, flight.version,
                    resync=lambda actor: sync_adapter(learner.inner.policy, [actor], state.iteration))
            with timed("learn", timings):
                metrics = learner.update(out, scored, critic_only=state.iteration < cfg.ppo.critic_warmup,
                                         iteration=state.iteration)
            state.iteration += 1
            with timed("sync", timings):
                if rank == 0:
                    sync_adapter(learner.inner.policy, rollout_workers, state.iteration)
                barrier()
        metrics.update(learner.iteration_metrics(state, out, scored, timings))
        metrics.update(learner.judged_metrics(out))
        metrics["objective"] = objective(cfg, metrics)
        prompts = gather_digests(flight.batch["id"], flight.batch["prompt"])  # every rank: a collective
        if learner.log is not None:
            learner.log.write(state.iteration, metrics, prompts)
        # Ctrl-C at the driver (rlaf_ray.interrupt): checkpoint this iteration and leave the loop.
        stopping = state.iteration < cfg.ppo.num_iterations and stop_agreed(
            loop_config.get("stop"), rank, learner.ppo.device)
        report(cfg, state, metrics, learner, rank, checkpoint=stopping)
        if stopping:
            break
    if rank == 0:
        if state.iteration == cfg.ppo.num_iterations:
            save_final(cfg, learner)
        learner.log.close()


def objective(cfg: RLAFConfig, metrics: dict[str, float]) -> float:
    """What a search should maximize: the reward less a fixed price per nat of KL to the base
    (``tune.kl_price``), so that a trial cannot win by drifting away from fluent language. The
    price is fixed, not the run's own kl_coef, which a search may lower to win."""
    return metrics["reward/mean"] - cfg.tune.kl_price * metrics["kl/mean"]


def iteration_seed(cfg: RLAFConfig, iteration: int, rank: int) -> int:
    return (cfg.ppo.seed * 1_000_003 + iteration * 1009 + rank) % (2**31)


def prompt_batches(shard, batch_size: int, state: LoopState, seed: int):
    """Yield ``(epoch, batches_done_in_epoch, batch)`` forever, starting at ``state``.

    Together with the dataset's fixed order (``preserve_order``) and the seeded local shuffle,
    ``state`` pins the exact prompts: a resumed run neither repeats nor skips any."""
    epoch, skip = state.epoch, state.batches_in_epoch
    while True:
        produced = 0
        batches = shard.iter_batches(batch_size=batch_size, drop_last=True, batch_format="numpy",
                                     local_shuffle_buffer_size=batch_size * 4,
                                     local_shuffle_seed=seed + epoch)
        for index, batch in enumerate(batches):
            produced += 1
            if index < skip:
                continue
            yield epoch, index + 1, batch
        if produced == 0:
            raise RuntimeError(f"data: this learner's shard has fewer than {batch_size} prompts")
        epoch, skip = epoch + 1, 0


def sync_adapter(policy, rollout_workers: list, version: int) -> None:
    """One ``ray.put`` of the LoRA tensors; every rollout actor loads the same object. An actor
    that dies meanwhile is left out: Ray restarts it, and its rank re-syncs it before its next
    generate (``roles.calls.collect_batch``)."""
    ref = ray.put(adapter_state_dict(policy))
    loaded = []  # the versions of the actors that answered
    for call in [w.load_adapter.remote(ref, version) for w in rollout_workers]:
        try:
            loaded.append(ray.get(call))
        except ray.exceptions.RayActorError:
            pass
    if any(v != version for v in loaded):
        raise RuntimeError(f"adapter sync: rollout workers report versions {loaded}, expected {version}")


def prompt_digest(row_id: str, prompt: str) -> str:
    """A prompt row's identity in the ledger: its id and text (a dataset may repeat a text)."""
    return hashlib.sha256(f"{row_id}\x00{prompt}".encode()).hexdigest()[:16]


def gather_digests(ids, prompts) -> list[list[str]]:
    """The digests of every rank's prompts of this iteration, in rank order (on every rank)."""
    mine = [prompt_digest(str(i), str(p)) for i, p in zip(ids, prompts)]
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [mine]
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


# ----------------------------------------------------------------------------------------------
# What one rank holds


@dataclass
class Learner:
    cfg: RLAFConfig
    world: int
    tokenizer: object
    inner: PolicyWithValueHead  # the policy with its value head, outside DDP
    model: torch.nn.Module  # DDP-wrapped when there are several ranks
    ppo: PPOLearner
    trainable: int
    log: RunLog | None  # rank 0 only

    def update(self, out: dict, scored: dict, critic_only: bool = False, iteration: int | None = None) -> dict[str, float]:
        """One PPO update; ``iteration`` (the learner's version): how stale each response is,
        corrected against the rollout's own log-probs when it has them (``ppo.max_staleness``)."""
        batch = collate(out["prompt_ids"], out["response_ids"], self.tokenizer.pad_token_id, self.ppo.device,
                        self.inner.decoder_start_token_id)
        behaviour = staleness = None
        if iteration is not None and out.get("logprobs") is not None:
            # Right-padded like the responses they belong to (TRL's pad, as in ppo.batch.collate).
            behaviour = pad([torch.tensor(lp, dtype=torch.float32) for lp in out["logprobs"]], padding_value=0.0,
                            padding_side="right").to(self.ppo.device)
            staleness = torch.tensor([iteration - v for v in out["versions"]], device=self.ppo.device)
        return self.ppo.step(batch, torch.tensor(scored["scores"]), torch.tensor(out["ended"]), critic_only,
                             behaviour=behaviour, staleness=staleness)

    def iteration_metrics(self, state: LoopState, out: dict, scored: dict,
                          timings: dict[str, float]) -> dict[str, float]:
        """Timings, throughput and memory of the iteration, beside the PPO update's metrics."""
        return {
            "time/generate": out["seconds"], "time/score": scored["seconds"], **timings,
            "time/finished_at": time.time(),  # wall clock (Unix s): gaps show what a fault cost
            "perf/samples_per_second": self.cfg.ppo.batch_size / timings["time/iteration"],
            "policy/version": state.iteration, "data/epoch": state.epoch,
            "params/trainable": self.trainable,
            # GPU memory where there is a GPU, resident memory otherwise (this rank, its actors).
            "memory/learner_peak_mib": peak_memory_mib(),
            "memory/rollout_peak_mib": out["peak_memory_mib"],
            "memory/reward_peak_mib": scored["peak_memory_mib"],
        }

    def judged_metrics(self, out: dict) -> dict[str, float]:
        """In the offline world (``evaluation.judge``): its exact judges on the batch's responses,
        over all ranks: the ground truth beside the reward, every iteration. Never the reward."""
        if self.cfg.evaluation.judge != "detox_world":
            return {}
        texts = out["responses"]
        s = global_sums({"samples": len(texts), "toxic": sum(map(world.is_toxic, texts)),
                         "grammatical": sum(map(world.is_grammatical, texts))}, self.ppo.device)
        return {"world/toxic_rate": s["toxic"] / s["samples"],
                "world/grammatical_rate": s["grammatical"] / s["samples"]}


def build_learner(cfg: RLAFConfig, rollout_workers: list, eva_prompts: list[str]) -> tuple[Learner, LoopState]:
    """The policy with its value head under DDP, the PPO update, the state to start from (the
    latest checkpoint's, if any); rank 0 sends that adapter to every rollout actor. A new run
    with ``lora.init: eva`` starts its adapter from ``eva_prompts``."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    use_deterministic_algorithms(cfg.run.deterministic)
    torch.manual_seed(cfg.ppo.seed)
    tokenizer = load_tokenizer(cfg.model)
    # Critic-free estimators build no value head (nothing of it in DDP, checkpoints or memory).
    inner = learner_model(cfg.model, cfg.lora, cfg.ppo.value_head, ray.train.torch.get_device())
    policy = inner.policy
    checkpoint = ray.train.get_checkpoint()
    if eva_prompts and checkpoint is None and rank == 0:  # the other ranks get A from DDP's broadcast below
        init_eva(policy, tokenizer, eva_prompts, cfg.model)
        print(f"[rlaf] LoRA A from the principal directions of {len(eva_prompts)} train prompts (EVA)",
              file=sys.__stdout__, flush=True)
    # DDP broadcasts the module's state from rank 0 when it wraps it: every rank loaded the same
    # frozen base, so only the trainable tensors need it (MBs of adapter, not GBs of base).
    frozen = [name for name, p in inner.named_parameters() if not p.requires_grad]
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(inner, frozen)
    model = prepare_model(inner, move_to_device=False)  # DDP when world > 1
    ppo = PPOLearner(cfg.ppo, model, cfg.generation, eos_token_id(cfg.generation, tokenizer))
    trainable, total = trainable_parameters(inner)

    state = restore(checkpoint, inner, ppo) if checkpoint is not None else LoopState()
    log = None
    if rank == 0:
        log = RunLog(cfg.run_storage, cfg.ppo.num_iterations, resume_from=state.iteration)
        record_parameters(cfg, inner, trainable, total)
        parts = "LoRA + value head" if inner.value_head is not None else "LoRA"
        print(f"[rlaf] learners={world} trainable parameters ({parts}) {trainable:,} of {total:,} "
              f"({100 * trainable / total:.3f}%), {cfg.model.dtype} base, starting at iteration "
              f"{state.iteration}", file=sys.__stdout__, flush=True)  # once, not also via Train's logger
        sync_adapter(policy, rollout_workers, state.iteration)
    barrier()
    return Learner(cfg, world, tokenizer, inner, model, ppo, trainable, log), state


def record_parameters(cfg: RLAFConfig, inner: PolicyWithValueHead, trainable: int, total: int) -> None:
    """``parameters.json`` in the run directory: what trains, out of how much."""
    value_head = sum(p.numel() for p in inner.value_head.parameters()) if inner.value_head is not None else 0
    write_text_atomic(cfg.run_dir / "parameters.json", json.dumps({
        "trainable": trainable, "total": total, "trainable_share": trainable / total,
        "adapter": trainable - value_head, "value_head": value_head,
        "architecture": type(inner.policy.get_base_model()).__name__, "seq2seq": inner.seq2seq,
        "dtype": cfg.model.dtype, "lora_target_modules": sorted(inner.policy.peft_config["default"].target_modules),
    }, indent=1))
    cfg.run_storage.push("parameters.json")


# ----------------------------------------------------------------------------------------------
# Checkpoints and the final adapter


def report(cfg: RLAFConfig, state: LoopState, metrics: dict, learner: Learner, rank: int,
           checkpoint: bool = False) -> None:
    """Report metrics to Ray Train (every rank: it is a barrier); rank 0 attaches checkpoints,
    when due or when ``checkpoint`` asks for one."""
    due = checkpoint or state.iteration % cfg.run.checkpoint_every == 0 or state.iteration == cfg.ppo.num_iterations
    metrics = {**metrics, "iteration": state.iteration}
    if not due or rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        needed = checkpoint_bytes(learner.inner)
        for disk in [directory] + ([] if cfg.run_storage.remote else [cfg.run.output_dir]):
            check_free_space(disk, needed)
        save_checkpoint(Path(directory), learner.inner, learner.ppo, state)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory),
                         checkpoint_dir_name=checkpoint_dir_name(state.iteration))


def save_final(cfg: RLAFConfig, learner: Learner) -> None:
    """``final/``: the adapter (a standard PEFT directory) and the value head, written whole: a
    ``final/`` that exists is complete (``RunStorage.write_whole``)."""
    cfg.run_storage.write_whole("final", lambda d: save_adapter(learner.inner, d, learner.tokenizer),
                                last="adapter_config.json")
