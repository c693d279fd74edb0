"""Checkpoint and final-artifact layout of a run (written by learner rank 0).

A checkpoint directory holds ``adapter/`` (a standard PEFT directory), ``value_head.safetensors``,
``learner.pt`` (optimizer, KL controller, shuffling RNG) and ``state.json`` (iteration, data
position, policy version).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rlaf_ray.models.policy import PolicyWithValueHead, load_adapter_state
from rlaf_ray.ppo.learner import PPOLearner


@dataclass
class LoopState:
    iteration: int = 0  # PPO updates done; also the policy version
    epoch: int = 0  # data epoch in progress
    batches_in_epoch: int = 0  # batches of that epoch already consumed by each rank


def save_adapter(model: PolicyWithValueHead, directory: Path, tokenizer=None) -> None:
    model.policy.save_pretrained(directory / "adapter")
    if tokenizer is not None:
        tokenizer.save_pretrained(directory / "adapter")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.value_head.state_dict().items()},
              str(directory / "value_head.safetensors"))


def save_checkpoint(directory: Path, model: PolicyWithValueHead, learner: PPOLearner,
                    state: LoopState) -> None:
    save_adapter(model, directory)
    torch.save(learner.state_dict(), directory / "learner.pt")
    (directory / "state.json").write_text(json.dumps(asdict(state)))


def load_checkpoint(directory: Path, model: PolicyWithValueHead, learner: PPOLearner) -> LoopState:
    adapter = load_file(str(directory / "adapter" / "adapter_model.safetensors"))
    # save_pretrained drops the adapter name from the keys; set_peft_model_state_dict adds it back.
    load_adapter_state(model.policy, adapter)
    model.value_head.load_state_dict(load_file(str(directory / "value_head.safetensors")))
    learner.load_state_dict(torch.load(directory / "learner.pt", weights_only=True))
    return LoopState(**json.loads((directory / "state.json").read_text()))
