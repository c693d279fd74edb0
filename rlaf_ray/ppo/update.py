"""The PPO update on one learner rank.

Reads top to bottom like CleanRL's ``ppo.py``: old log-probs and values, reference log-probs
(adapter disabled), KL-shaped rewards, GAE, whitened advantages, then ``ppo_epochs`` passes over
shuffled minibatches with clipped policy and value losses and gradient-norm clipping. Under DDP
the backward pass all-reduces gradients; batch statistics (advantage whitening, KL for the
adaptive controller, reported metrics) are reduced over all ranks too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from rlaf_ray.config import GenerationSettings, PPOSettings
from rlaf_ray.ppo import core
from rlaf_ray.ppo.batch import RolloutBatch
from rlaf_ray.ppo.distributed import global_masked_stats, global_sums, world_size

MINIBATCH_STATS = ("policy_loss", "value_loss", "entropy", "clip_fraction", "value_clip_fraction",
                   "approx_kl", "grad_norm")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (or the module itself)."""
    return model.module if hasattr(model, "module") else model


@dataclass
class Targets:
    """What the epochs learn from, fixed before the first minibatch."""

    mask: torch.Tensor  # response tokens that take part (non-finite scores left out)
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    kl: torch.Tensor  # per token, as used in the reward


class PPOLearner:
    def __init__(self, cfg: PPOSettings, model: nn.Module,
                 generation: GenerationSettings | None = None, eos_token_id: int | None = None):
        self.cfg = cfg
        self.model = model  # possibly DDP-wrapped; unwrap(model) for no-grad passes
        # Log-probs must follow the sampling rules the rollout used (temperature, min_new_tokens).
        self.generation = generation or GenerationSettings()
        self.eos_token_id = eos_token_id
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate)
        self.kl_ctl = (core.AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
                       if cfg.adaptive_kl else core.FixedKLController(cfg.kl_coef))
        self.generator = torch.Generator().manual_seed(cfg.seed)

    @property
    def device(self) -> torch.device:
        return next(unwrap(self.model).value_head.parameters()).device

    def forward(self, model: nn.Module, batch: RolloutBatch, need_entropy: bool = False):
        """Log-probs of the response tokens, values before each of them, optionally entropy."""
        logits, values = model(**batch.inputs)
        start, end = batch.logits_start, batch.logits_start + batch.response_ids.shape[1]
        # Sampling used this temperature, so the log-probs must too.
        # A new tensor (out-of-place division), so the EOS mask below can write into it.
        logits = logits[:, start:end].float() / self.generation.temperature
        min_new = self.generation.min_new_tokens
        if min_new and self.eos_token_id is not None:
            # Generation could not pick EOS before min_new_tokens: score with the same rule, or
            # the update pushes probability onto an EOS that is never sampled there (and the
            # measured KL turns negative). The most negative finite value, not -inf, so that
            # entropy's p * log p stays 0, not NaN.
            logits[:, :min_new, self.eos_token_id] = torch.finfo(logits.dtype).min
        logprobs = selective_log_softmax(logits, batch.response_ids)
        entropy = entropy_from_logits(logits) if need_entropy else None
        return logprobs, values[:, start:end].float(), entropy

    @torch.no_grad()
    def _reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        inner = unwrap(self.model)
        # The frozen base is the reference: the same network with the adapter switched off.
        with inner.policy.disable_adapter():
            logprobs, _, _ = self.forward(inner, batch)
        return logprobs

    def step(self, batch: RolloutBatch, scores: torch.Tensor, ended: torch.Tensor) -> dict[str, float]:
        """One PPO update on this rank's batch; returns the batch's metrics (over all ranks)."""
        scores = scores.to(device=self.device, dtype=torch.float32)
        finite = torch.isfinite(scores)
        # Non-finite scores become 0; their samples leave the update through the mask.
        scores = torch.where(finite, scores, torch.zeros_like(scores))
        targets = self.targets(batch, self.shaped_scores(scores, ended), finite)
        stats = self.run_epochs(batch, targets)
        return self.batch_metrics(batch, targets, stats, scores, finite, ended)

    def shaped_scores(self, scores: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
        """The missing-EOS penalty added to responses that never ended."""
        if self.cfg.missing_eos_penalty is not None:
            scores = scores + self.cfg.missing_eos_penalty * (~ended.to(self.device)).float()
        return scores

    def targets(self, batch: RolloutBatch, scores: torch.Tensor, finite: torch.Tensor) -> Targets:
        """Old log-probs and values, reference log-probs, KL-shaped rewards, GAE, whitening."""
        cfg = self.cfg
        # The batch keeps its size so every rank runs the same number of minibatch passes.
        mask = batch.response_mask.clone()
        mask[~finite] = 0.0
        with torch.no_grad():  # dropout is off in the model
            old_logprobs, old_values, _ = self.forward(unwrap(self.model), batch)
            ref_logprobs = self._reference_logprobs(batch)
        kl = core.kl_estimate(old_logprobs, ref_logprobs, cfg.kl_estimator) * mask
        rewards = core.shaped_rewards(scores, kl, mask, self.kl_ctl.value)
        advantages, returns = core.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            mean, var = global_masked_stats(advantages, mask)
            advantages = core.masked_whiten(advantages, mask, mean=mean, var=var)
        return Targets(mask, old_logprobs, old_values, advantages, returns, kl)

    def run_epochs(self, batch: RolloutBatch, targets: Targets) -> dict[str, list[float]]:
        """``ppo_epochs`` passes over shuffled minibatches; each minibatch's statistics."""
        size = batch.response_ids.shape[0]
        mb_size = size // self.cfg.num_minibatches
        stats: dict[str, list[float]] = {k: [] for k in MINIBATCH_STATS}
        self.model.train()
        for _ in range(self.cfg.ppo_epochs):
            order = torch.randperm(size, generator=self.generator).to(self.device)
            for first in range(0, size, mb_size):
                for key, value in self.minibatch_step(batch, targets, order[first:first + mb_size]).items():
                    stats[key].append(value)
        self.model.eval()
        return stats

    def minibatch_step(self, batch: RolloutBatch, t: Targets, idx: torch.Tensor) -> dict[str, float]:
        """Clipped policy and value losses on one minibatch, one optimizer step."""
        cfg = self.cfg
        mask = t.mask[idx]
        logprobs, values, entropy = self.forward(self.model, batch.select(idx), need_entropy=True)
        pg = core.clipped_policy_loss(logprobs, t.old_logprobs[idx], t.advantages[idx], mask, cfg.cliprange)
        vf_loss, vf_clip = core.clipped_value_loss(values, t.old_values[idx], t.returns[idx], mask,
                                                   cfg.cliprange_value)
        loss = pg.loss + cfg.vf_coef * vf_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces gradients here
        if cfg.max_grad_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        self.optimizer.step()
        return {"policy_loss": pg.loss.item(), "value_loss": vf_loss.item(),
                "entropy": core.masked_mean(entropy.detach(), mask).item(),
                "clip_fraction": pg.clip_fraction.item(), "value_clip_fraction": vf_clip.item(),
                "approx_kl": pg.approx_kl.item(), "grad_norm": float(grad_norm)}

    def batch_metrics(self, batch: RolloutBatch, t: Targets, stats: dict[str, list[float]],
                      scores: torch.Tensor, finite: torch.Tensor, ended: torch.Tensor) -> dict[str, float]:
        """Statistics of the batch over all ranks (``scores``: before the missing-EOS penalty,
        non-finite ones zeroed); the KL controller moves on their KL."""
        valid = finite.float()
        s = global_sums({
            "score": (scores * valid).sum().item(), "score_sq": (scores**2 * valid).sum().item(),
            "valid": valid.sum().item(), "samples": float(batch.response_ids.shape[0]),
            "non_finite": (~finite).sum().item(), "kl": core.masked_sum(t.kl, t.mask).item(),
            "response_tokens": batch.response_mask.sum().item(), "ended": ended.float().sum().item(),
        }, self.device)
        n_valid = max(s["valid"], 1.0)
        reward_mean = s["score"] / n_valid
        reward_var = max(s["score_sq"] / n_valid - reward_mean**2, 0.0)
        kl_per_sample = s["kl"] / n_valid
        kl_coef_used = self.kl_ctl.value
        self.kl_ctl.update(kl_per_sample, int(s["samples"]))

        means = global_sums({k: sum(v) / len(v) for k, v in stats.items()}, self.device)
        metrics = {f"ppo/{k}": m / world_size() for k, m in means.items()}
        metrics.update({
            "reward/mean": reward_mean,
            "reward/std": math.sqrt(reward_var * s["valid"] / (s["valid"] - 1)) if s["valid"] > 1 else 0.0,
            "reward/non_finite": s["non_finite"],
            "kl/mean": kl_per_sample,
            "kl/coef": kl_coef_used,
            "response/length_mean": s["response_tokens"] / s["samples"],
            "response/ended_fraction": s["ended"] / s["samples"],
        })
        return metrics

    # Checkpoint state beyond the adapter.
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "kl_ctl": self.kl_ctl.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.generator.set_state(state["generator"])
