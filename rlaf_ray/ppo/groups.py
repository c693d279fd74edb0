"""Critic-free advantages from groups of responses to the same prompt (pure math, no models).

A batch holds ``group`` consecutive responses per prompt. Each response's advantage is its
sequence reward compared with the other responses to its prompt, so no value head is needed:

- ``rloo`` (REINFORCE leave-one-out, Ahmadian et al. 2024; TRL's RLOO): ``r_i`` less the mean of
  the *other* responses of its group, an unbiased baseline;
- ``grpo`` (Shao et al. 2024; TRL's GRPO): ``r_i - mean`` of its group, divided by a std as
  ``scale`` says (TRL's ``scale_rewards``): ``group``, the group's own std (the paper's);
  ``none``, no division (Dr. GRPO, Liu et al. 2025); ``batch``, the std of the rewards over the
  whole batch (Lite PPO, Liu et al. 2025), which the caller applies: it spans every learner.

Responses without a valid reward (non-finite score) take no part: they get advantage 0 and are
left out of their group's baseline; a group with fewer than two valid responses has nothing to
compare with, and all its advantages are 0.
"""

from __future__ import annotations

import torch

GRPO_EPS = 1e-4


GRPO_SCALES = ("group", "batch", "none")


def group_advantages(rewards: torch.Tensor, valid: torch.Tensor, group: int, estimator: str,
                     scale: str = "group") -> torch.Tensor:
    """``rewards``, ``valid``: shape [B] with B a multiple of ``group``; returns advantages [B].
    ``scale`` (grpo only): ``group`` divides by the group's std; ``batch`` and ``none`` leave the
    centred rewards undivided here."""
    if rewards.shape[0] % group:
        raise ValueError(f"{rewards.shape[0]} responses are not whole groups of {group}")
    r = rewards.view(-1, group).double()
    v = valid.view(-1, group).double()
    n = v.sum(dim=1, keepdim=True)
    total = (r * v).sum(dim=1, keepdim=True)
    comparable = (n >= 2) & (v > 0)
    if estimator == "rloo":
        others_mean = (total - r) / (n - 1).clamp(min=1)
        advantages = r - others_mean
    elif estimator == "grpo":
        if scale not in GRPO_SCALES:
            raise ValueError(f"scale: expected one of {', '.join(GRPO_SCALES)}, got {scale!r}")
        mean = total / n.clamp(min=1)
        advantages = r - mean
        if scale == "group":
            std = (((r - mean) ** 2 * v).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
            advantages = advantages / (std + GRPO_EPS)
    else:
        raise ValueError(f"estimator: expected 'rloo' or 'grpo', got {estimator!r}")
    advantages = torch.where(comparable, advantages, torch.zeros_like(advantages))
    return advantages.view(-1).to(rewards.dtype)


def sequence_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Each response's reward as one number: its score less ``kl_coef`` times its summed per-token
    KL to the reference (the KL-in-reward form of RLOO; 0 when the KL is in the loss)."""
    return scores - kl_coef * (kl * mask).sum(dim=1)
