"""Distributed PPO training: roles as Ray actors, learners as a Ray Train ``TorchTrainer``.

The driver (``train``) checks everything it can, starts the rollout and reward actors, and runs
the learner group. The PPO loop itself (``learner_loop``) runs on every learner rank and names the
roles in order: ``generate`` (rollout actor) -> ``score`` (reward actor, fed the rollout's
ObjectRef directly) -> ``update`` (local PPO step, gradients all-reduced by DDP) -> ``sync``
(rank 0 puts the adapter in the object store once; every rollout actor loads it).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
from ray.data import ExecutionOptions
from ray.train import Checkpoint, CheckpointConfig, DataConfig, FailureConfig
from ray.train.torch import TorchTrainer, prepare_model

from rlaf_ray.checkpoint import LoopState, load_checkpoint, save_adapter, save_checkpoint
from rlaf_ray.config import ConfigError, RoleResources, RunConfig, dump_yaml, from_dict
from rlaf_ray.data import PromptSplit, get_source, load_split
from rlaf_ray.memory import peak_memory_mib
from rlaf_ray.models.policy import (
    PolicyWithValueHead,
    adapter_state_dict,
    eos_token_id,
    load_policy,
    load_tokenizer,
    trainable_parameters,
)
from rlaf_ray.placement import ensure_placement, ensure_shared_output, scaling_config
from rlaf_ray.preflight import prepare
from rlaf_ray.ppo.learner import PPOLearner, collate, unwrap
from rlaf_ray.reward import RewardWorker
from rlaf_ray.rollout import RolloutWorker
from rlaf_ray.run_log import RunLog


# ----------------------------------------------------------------------------------------------
# Driver side


def actor_options(res: RoleResources, name: str, placement_group=None) -> dict:
    """``placement_group``: reserved for these actors (a Tune trial's group): each goes into any
    bundle with room, and what it starts itself is not held to the group."""
    options = {"name": name, "num_cpus": res.num_cpus, "num_gpus": res.num_gpus,
               "resources": dict(res.resources)}
    if placement_group is not None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            placement_group, placement_group_bundle_index=-1, placement_group_capture_child_tasks=False)
    return options


@dataclass
class Roles:
    rollout: list
    reward: list

    def all(self) -> list:
        return self.rollout + self.reward


def start_roles(cfg: RunConfig, placement_group=None) -> Roles:
    """Rollout and reward actors, named ``rlaf:<run>:<role>-<i>`` for the Ray dashboard."""
    config = cfg.to_dict()
    prefix = f"rlaf:{cfg.run.name}"
    rollout = [ray.remote(RolloutWorker)
               .options(**actor_options(cfg.resources.rollout, f"{prefix}:rollout-{i}", placement_group))
               .remote(config, i) for i in range(cfg.resources.rollout.num_workers)]
    reward = [ray.remote(RewardWorker)
              .options(**actor_options(cfg.resources.reward, f"{prefix}:reward-{i}", placement_group))
              .remote(config, i) for i in range(cfg.resources.reward.num_workers)]
    roles = Roles(rollout, reward)
    ray.get([actor.ready.remote() for actor in roles.all()])
    return roles


def stop_roles(roles: Roles) -> None:
    for actor in roles.all():
        ray.kill(actor)


def count_prompts(cfg: RunConfig, prompts: PromptSplit) -> dict[str, int]:
    """One streaming pass over the split: enough prompts for a batch? Report the token limit."""
    stats = prompts.stats()
    where = f"the {prompts.name} split of data.path {get_source(cfg.data).location(cfg.data)!r}"
    if stats["rows"] == 0:
        raise ConfigError([f"data: no prompts left in {where} after the filters (source {cfg.data.source!r}, "
                           f"min_chars={cfg.data.min_chars}, max_chars={cfg.data.max_chars}, "
                           f"too_long={cfg.data.too_long!r})"])
    if stats["rows"] < cfg.ppo.batch_size:
        raise ConfigError([f"data: {stats['rows']} prompts in {where}, fewer than "
                           f"ppo.batch_size={cfg.ppo.batch_size}"])
    print(f"[rlaf] data: {stats['rows']} prompts in {where}; longer than "
          f"model.max_prompt_length={cfg.model.max_prompt_length} tokens: {stats['truncated']} truncated "
          f"from the left, {stats['dropped']} dropped", flush=True)
    return stats


def prompt_data_config() -> DataConfig:
    # A fixed order (and so a fixed split between ranks) every epoch: with the seeded local
    # shuffle in ``prompt_batches``, a resumed run can skip exactly the batches it saw.
    return DataConfig(execution_options=ExecutionOptions(preserve_order=True))


def train(cfg: RunConfig, address: str | None = None, callbacks: list | None = None,
          placement_group=None, prompts: PromptSplit | None = None) -> Path:
    """Run PPO to completion (or resume it); returns the run directory holding ``final/adapter``.

    ``address``: a Ray cluster to join (default: RAY_ADDRESS, else a local instance).
    ``callbacks``: extra Ray Train callbacks, e.g. ``TuneReportCallback`` when this run is a Tune
    trial; ``placement_group``: where the rollout and reward actors are reserved (the trial's);
    ``prompts``: the train split already loaded with these data and model settings (shared by a
    search's trials). ``rlaf_ray.tune`` calls it from an actor of the trial, Ray initialized.
    """
    evaluate_after = cfg.evaluation.after_train
    # every check that needs no actor, before Ray starts
    cfg = prepare(cfg, ("train", cfg.evaluation.split) if evaluate_after else ("train",),
                  evaluation=evaluate_after)
    if not ray.is_initialized():
        ray.init(address=address)
    ensure_placement(cfg)
    ensure_shared_output(cfg.run.output_dir)
    if prompts is None:
        prompts = load_split(cfg.data, cfg.model, "train")
    stats = count_prompts(cfg, prompts)

    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    (run_dir / "data_stats.json").write_text(json.dumps({"train": stats}, indent=1))

    roles = start_roles(cfg, placement_group)
    try:
        trainer = TorchTrainer(
            learner_loop,
            train_loop_config={"config": cfg.to_dict(), "rollout": roles.rollout, "reward": roles.reward,
                               "num_prompts": stats["rows"]},
            scaling_config=scaling_config(cfg.resources.learner),
            run_config=ray.train.RunConfig(
                name=cfg.run.name,
                storage_path=cfg.run.output_dir,
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
                failure_config=FailureConfig(max_failures=cfg.run.max_failures),
                callbacks=list(callbacks or []),
            ),
            datasets={"train": prompts.dataset},
            dataset_config=prompt_data_config(),
        )
        trainer.fit()
    finally:
        stop_roles(roles)
    if evaluate_after:
        from rlaf_ray.evaluation.report import write_report  # matplotlib etc. only when needed

        write_report(cfg, run_dir)
        print(f"[rlaf] report: {run_dir / 'report'}", flush=True)
    return run_dir


# ----------------------------------------------------------------------------------------------
# Learner side (runs on every Ray Train worker)


def sync_adapter(policy, rollout_workers: list, version: int) -> None:
    """One ``ray.put`` of the LoRA tensors; every rollout actor loads the same object."""
    ref = ray.put(adapter_state_dict(policy))
    loaded = ray.get([w.load_adapter.remote(ref, version) for w in rollout_workers])
    if loaded != [version] * len(rollout_workers):
        raise RuntimeError(f"adapter sync: rollout workers report versions {loaded}, expected {version}")


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


def iteration_seed(cfg: RunConfig, iteration: int, rank: int) -> int:
    return (cfg.ppo.seed * 1_000_003 + iteration * 1009 + rank) % (2**31)


def learner_loop(loop_config: dict) -> None:
    from trl.trainer.utils import disable_dropout_in_model

    cfg = from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    rollout = loop_config["rollout"][rank % len(loop_config["rollout"])]
    reward = loop_config["reward"][rank % len(loop_config["reward"])]
    torch.manual_seed(cfg.ppo.seed)

    tokenizer = load_tokenizer(cfg.model)
    device = ray.train.torch.get_device()
    policy = load_policy(cfg.model, cfg.lora, device, for_training=True)
    # Dropout off: old log-probs, reference and updates then see the same network.
    disable_dropout_in_model(policy)
    inner = PolicyWithValueHead(policy)
    # The policy was loaded onto the device (a quantized one cannot be moved afterwards).
    inner.value_head.to(device)
    # DDP broadcasts the module's state from rank 0 when it wraps it: every rank loaded the same
    # frozen base, so only the trainable tensors need it (MBs of adapter, not GBs of base).
    frozen = [name for name, p in inner.named_parameters() if not p.requires_grad]
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(inner, frozen)
    model = prepare_model(inner, move_to_device=False)  # DDP when world > 1
    learner = PPOLearner(cfg.ppo, model, cfg.generation, eos_token_id(cfg.generation, tokenizer))
    trainable, total = trainable_parameters(inner)

    state = LoopState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(Path(directory), unwrap(model), learner)
    log = RunLog(cfg.run_dir, cfg.ppo.num_iterations, resume_from=state.iteration) if rank == 0 else None
    if rank == 0:
        record_parameters(cfg, inner, trainable, total)
        print(f"[rlaf] learners={world} trainable parameters (LoRA + value head) {trainable:,} of {total:,} "
              f"({100 * trainable / total:.3f}%), {cfg.model.dtype} base, starting at iteration "
              f"{state.iteration}", flush=True)
        sync_adapter(policy, loop_config["rollout"], state.iteration)
    barrier()

    per_rank = cfg.ppo.batch_size // world
    shard = ray.train.get_dataset_shard("train")
    batches = prompt_batches(shard, per_rank, state, seed=cfg.data.seed * 7919 + rank)
    while state.iteration < cfg.ppo.num_iterations:
        t_start = time.perf_counter()
        state.epoch, state.batches_in_epoch, batch = next(batches)
        prompts = [str(p) for p in batch["prompt"]]

        # generate -> score: the rollout goes to the reward actor as an ObjectRef.
        rollout_ref = rollout.generate.remote(prompts, iteration_seed(cfg, state.iteration, rank))
        score_ref = reward.score.remote(rollout_ref)
        out, scored = ray.get([rollout_ref, score_ref])
        if out["version"] != state.iteration:
            raise RuntimeError(f"rollout used adapter version {out['version']}, expected {state.iteration}")
        t_rollout = time.perf_counter()

        # update
        rollout_batch = collate(out["prompt_ids"], out["response_ids"], tokenizer.pad_token_id, learner.device,
                                inner.decoder_start_token_id)
        metrics = learner.step(rollout_batch, torch.tensor(scored["scores"]), torch.tensor(out["ended"]))
        state.iteration += 1
        t_learn = time.perf_counter()

        # sync
        if rank == 0:
            sync_adapter(policy, loop_config["rollout"], state.iteration)
        barrier()
        t_end = time.perf_counter()

        metrics.update({
            "time/generate": out["seconds"], "time/score": scored["seconds"],
            "time/rollout_wall": t_rollout - t_start, "time/learn": t_learn - t_rollout,
            "time/sync": t_end - t_learn, "time/iteration": t_end - t_start,
            "perf/samples_per_second": cfg.ppo.batch_size / (t_end - t_start),
            "policy/version": state.iteration, "data/epoch": state.epoch,
            "params/trainable": trainable,
            # GPU memory where there is a GPU, resident memory otherwise (this rank, its actors).
            "memory/learner_peak_mib": peak_memory_mib(),
            "memory/rollout_peak_mib": out["peak_memory_mib"],
            "memory/reward_peak_mib": scored["peak_memory_mib"],
        })
        if log is not None:
            log.write(state.iteration, metrics)
        report(cfg, state, metrics, unwrap(model), learner, rank)

    if rank == 0:
        save_adapter(unwrap(model), cfg.run_dir / "final", tokenizer)
        log.close()


def record_parameters(cfg: RunConfig, inner: PolicyWithValueHead, trainable: int, total: int) -> None:
    """``parameters.json`` in the run directory: what trains, out of how much."""
    value_head = sum(p.numel() for p in inner.value_head.parameters())
    (cfg.run_dir / "parameters.json").write_text(json.dumps({
        "trainable": trainable, "total": total, "trainable_share": trainable / total,
        "adapter": trainable - value_head, "value_head": value_head,
        "architecture": type(inner.policy.get_base_model()).__name__, "seq2seq": inner.seq2seq,
        "dtype": cfg.model.dtype, "lora_target_modules": sorted(inner.policy.peft_config["default"].target_modules),
    }, indent=1))


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def report(cfg: RunConfig, state: LoopState, metrics: dict, model: PolicyWithValueHead,
           learner: PPOLearner, rank: int) -> None:
    """Report metrics to Ray Train (every rank: it is a barrier); rank 0 attaches checkpoints."""
    due = state.iteration % cfg.run.checkpoint_every == 0 or state.iteration == cfg.ppo.num_iterations
    metrics = {**metrics, "iteration": state.iteration}
    if not due or rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(Path(directory), model, learner, state)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory),
                         checkpoint_dir_name=f"checkpoint_{state.iteration:06d}")
