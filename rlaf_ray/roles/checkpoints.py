"""What a learner checkpoint holds, and reading it back.

A checkpoint directory holds ``adapter/`` (a standard PEFT directory), ``value_head.safetensors``
(with the gae estimator's critic only), ``learner.pt`` (optimizer, KL controller, shuffling RNG)
and ``state.json`` (``LoopState``). A checkpoint that cannot be read is passed over for the one
before it; one is written only where there is room for it.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from ray.train import Checkpoint
from safetensors.torch import load_file, save_file

from rlaf_ray.models.policy import PolicyWithValueHead, load_adapter_state
from rlaf_ray.ppo.update import PPOLearner


@dataclass
class LoopState:
    iteration: int = 0  # PPO updates done; also the policy version
    epoch: int = 0  # data epoch in progress
    batches_in_epoch: int = 0  # batches of that epoch already trained on by each rank
    # Positions of the batches sent ahead (ppo.max_staleness) and not yet trained: a resumed run
    # starts after the last trained batch, so it generates these again.
    in_flight: list = field(default_factory=list)


def save_adapter(model: PolicyWithValueHead, directory: Path, tokenizer=None) -> None:
    model.policy.save_pretrained(directory / "adapter")
    if tokenizer is not None:
        tokenizer.save_pretrained(directory / "adapter")
    if model.value_head is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.value_head.state_dict().items()},
                  str(directory / "value_head.safetensors"))


def save_checkpoint(directory: Path, model: PolicyWithValueHead, learner: PPOLearner,
                    state: LoopState) -> None:
    save_adapter(model, directory)
    torch.save(learner.state_dict(), directory / "learner.pt")
    (directory / "state.json").write_text(json.dumps(asdict(state)))


def earlier_checkpoints(checkpoint: Checkpoint) -> list[Checkpoint]:
    """The run's other checkpoints older than ``checkpoint``, newest first (local or at a URI)."""
    from pyarrow import fs

    parent, name = checkpoint.path.rstrip("/").rsplit("/", 1)
    found = checkpoint.filesystem.get_file_info(fs.FileSelector(parent))
    names = sorted((f.base_name for f in found if f.type == fs.FileType.Directory
                    and f.base_name.startswith("checkpoint_") and f.base_name < name), reverse=True)
    return [Checkpoint(f"{parent}/{n}", filesystem=checkpoint.filesystem) for n in names]


def restore(checkpoint: Checkpoint, model: PolicyWithValueHead, learner: PPOLearner) -> LoopState:
    """Load the latest checkpoint; one that cannot be read (a torn file, a lost part) is passed
    over with a warning for the one before it. Each load sets every tensor and counter, so a
    half-loaded bad checkpoint leaves nothing behind."""
    for candidate in [checkpoint, *earlier_checkpoints(checkpoint)]:
        try:
            with candidate.as_directory() as directory:
                return load_checkpoint(Path(directory), model, learner)
        except Exception as err:  # noqa: BLE001 - any reading error: safetensors, torch, json, missing files
            print(f"[rlaf] warning: checkpoint {candidate.path} cannot be read ({type(err).__name__}: "
                  f"{str(err).splitlines()[0] if str(err) else ''}); trying the one before", file=sys.stderr, flush=True)
    raise RuntimeError(f"no readable checkpoint in {checkpoint.path.rsplit('/', 1)[0]}: each one failed to load "
                       "(see the warnings above); start a new run.name")


def load_checkpoint(directory: Path, model: PolicyWithValueHead, learner: PPOLearner) -> LoopState:
    adapter = load_file(str(directory / "adapter" / "adapter_model.safetensors"))
    # save_pretrained drops the adapter name from the keys; set_peft_model_state_dict adds it back.
    load_adapter_state(model.policy, adapter)
    if model.value_head is not None:
        model.value_head.load_state_dict(load_file(str(directory / "value_head.safetensors")))
    learner.load_state_dict(torch.load(directory / "learner.pt", weights_only=True))
    return LoopState(**json.loads((directory / "state.json").read_text()))


def checkpoint_bytes(model: PolicyWithValueHead) -> int:
    """About what a checkpoint takes: the trainable tensors, AdamW's two moments of each, and
    the small files."""
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return 3 * trainable + 2**20


def check_free_space(directory: str | Path, needed: int) -> None:
    """Refuse to start a checkpoint that would not fit (twice its size, for the copy Ray Train
    makes): a full disk would leave a torn checkpoint as the latest one."""
    free = shutil.disk_usage(directory).free
    if free < 2 * needed:
        raise OSError(f"checkpoint: {free / 2**20:.0f} MiB free in {directory}, a checkpoint needs about "
                      f"{2 * needed / 2**20:.0f} MiB; free some space and run the same command again to resume "
                      "from the latest checkpoint")
