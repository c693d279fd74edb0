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
import torch.distributed as dist
from torch import nn
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from rlaf_ray.config import GenerationConfig as GenerationSettings
from rlaf_ray.config import PPOConfig
from rlaf_ray.models.policy import PolicyWithValueHead
from rlaf_ray.ppo import core


@dataclass
class RolloutBatch:
    """What the model reads (``inputs``) and which of its outputs score the response.

    Causal LM: the left-padded prompt and right-padded response as one ``[B, P + R]`` sequence;
    the logits at positions ``P - 1 .. P + R - 2`` predict the response. Seq2seq LM: the prompt
    is the encoder input; the decoder reads ``[start] + response`` and its logits at positions
    ``0 .. R - 1`` predict the response.
    """

    inputs: dict[str, torch.Tensor]
    response_ids: torch.Tensor  # [B, R]
    response_mask: torch.Tensor  # [B, R], float
    logits_start: int

    def select(self, index: torch.Tensor) -> "RolloutBatch":
        return RolloutBatch({k: v[index] for k, v in self.inputs.items()}, self.response_ids[index],
                            self.response_mask[index], self.logits_start)


def _pad_rows(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(max(len(r) for r in rows), 1)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def collate(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
            device: torch.device | str = "cpu", decoder_start_token_id: int | None = None) -> RolloutBatch:
    """A rollout as model inputs; ``decoder_start_token_id`` given: the seq2seq layout."""
    responses, response_mask = _pad_rows(response_ids, pad_id, left=False)
    if decoder_start_token_id is not None:
        prompts, prompt_mask = _pad_rows(prompt_ids, pad_id, left=False)
        start = torch.full((len(prompt_ids), 1), decoder_start_token_id, dtype=torch.long)
        inputs = {"input_ids": prompts, "attention_mask": prompt_mask,
                  "decoder_input_ids": torch.cat([start, responses], dim=1),
                  "decoder_attention_mask": torch.cat([torch.ones_like(start), response_mask], dim=1)}
        logits_start = 0
    else:
        prompts, prompt_mask = _pad_rows(prompt_ids, pad_id, left=True)
        attention = torch.cat([prompt_mask, response_mask], dim=1)
        # Positions count real tokens only, as in generation from a left-padded batch.
        inputs = {"input_ids": torch.cat([prompts, responses], dim=1), "attention_mask": attention,
                  "position_ids": (attention.cumsum(dim=1) - 1).clamp(min=0)}
        logits_start = prompts.shape[1] - 1
    return RolloutBatch({k: v.to(device) for k, v in inputs.items()}, responses.to(device),
                        response_mask.float().to(device), logits_start)


def unwrap(model: nn.Module) -> PolicyWithValueHead:
    return model.module if hasattr(model, "module") else model


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_masked_stats(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of the masked entries of ``x`` over all ranks."""
    sums = all_reduce_sum(torch.stack([(x * mask).sum(), (x * x * mask).sum(), mask.sum()]).double())
    total, total_sq, n = sums[0], sums[1], sums[2].clamp(min=1)
    mean = total / n
    var = (total_sq / n - mean**2).clamp(min=0) * (n / (n - 1) if n > 1 else 1.0)
    return mean.to(x.dtype), var.to(x.dtype)


class PPOLearner:
    def __init__(self, cfg: PPOConfig, model: nn.Module,
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
        cfg = self.cfg
        device = self.device
        scores = scores.to(device=device, dtype=torch.float32)
        mask = batch.response_mask.clone()

        # Non-finite scores: those samples leave the update (mask zero) instead of poisoning it.
        # The batch keeps its size so every rank runs the same number of minibatch passes.
        finite = torch.isfinite(scores)
        mask[~finite] = 0.0
        scores = torch.where(finite, scores, torch.zeros_like(scores))
        raw_scores = scores
        if cfg.missing_eos_penalty is not None:
            scores = scores + cfg.missing_eos_penalty * (~ended.to(device)).float()

        # 1. Old log-probs and values, and reference log-probs (dropout is off in the model).
        with torch.no_grad():
            old_logprobs, old_values, _ = self.forward(unwrap(self.model), batch)
            ref_logprobs = self._reference_logprobs(batch)

        # 2. KL-shaped per-token rewards, GAE, whitened advantages.
        kl = core.kl_estimate(old_logprobs, ref_logprobs, cfg.kl_estimator) * mask
        rewards = core.shaped_rewards(scores, kl, mask, self.kl_ctl.value)
        advantages, returns = core.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            mean, var = global_masked_stats(advantages, mask)
            advantages = core.masked_whiten(advantages, mask, mean=mean, var=var)

        # 3. PPO epochs over shuffled minibatches.
        size = batch.response_ids.shape[0]
        mb_size = size // cfg.num_minibatches
        stats: dict[str, list[float]] = {k: [] for k in (
            "policy_loss", "value_loss", "entropy", "clip_fraction", "value_clip_fraction",
            "approx_kl", "grad_norm")}
        self.model.train()
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(size, generator=self.generator).to(device)
            for first in range(0, size, mb_size):
                idx = order[first:first + mb_size]
                mb = batch.select(idx)
                mb_mask = mask[idx]
                logprobs, values, entropy = self.forward(self.model, mb, need_entropy=True)
                pg = core.clipped_policy_loss(logprobs, old_logprobs[idx], advantages[idx], mb_mask,
                                              cfg.cliprange)
                vf_loss, vf_clip = core.clipped_value_loss(values, old_values[idx], returns[idx], mb_mask,
                                                           cfg.cliprange_value)
                loss = pg.loss + cfg.vf_coef * vf_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()  # DDP all-reduces gradients here
                if cfg.max_grad_norm is not None:
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                else:
                    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
                self.optimizer.step()
                stats["policy_loss"].append(pg.loss.item())
                stats["value_loss"].append(vf_loss.item())
                stats["entropy"].append(core.masked_mean(entropy.detach(), mb_mask).item())
                stats["clip_fraction"].append(pg.clip_fraction.item())
                stats["value_clip_fraction"].append(vf_clip.item())
                stats["approx_kl"].append(pg.approx_kl.item())
                stats["grad_norm"].append(float(grad_norm))
        self.model.eval()

        # 4. Batch statistics over all ranks, and the KL controller's update.
        n_ranks = world_size()
        valid = finite.float()
        sums = all_reduce_sum(torch.tensor([
            (raw_scores * valid).sum().item(), (raw_scores**2 * valid).sum().item(), valid.sum().item(),
            float(size), (~finite).sum().item(),
            core.masked_sum(kl, mask).item(),
            batch.response_mask.sum().item(), ended.float().sum().item(),
        ], dtype=torch.float64, device=device)).tolist()
        s_sum, s_sq, n_valid, n_total, n_nonfinite, kl_sum, resp_tokens, n_ended = sums
        n_valid_safe = max(n_valid, 1.0)
        reward_mean = s_sum / n_valid_safe
        reward_var = max(s_sq / n_valid_safe - reward_mean**2, 0.0)
        kl_per_sample = kl_sum / n_valid_safe
        kl_coef_used = self.kl_ctl.value
        self.kl_ctl.update(kl_per_sample, int(n_total))

        means = all_reduce_sum(torch.tensor([sum(v) / len(v) for v in stats.values()],
                                            dtype=torch.float64, device=device)).tolist()
        metrics = {f"ppo/{k}": m / n_ranks for k, m in zip(stats, means)}
        metrics.update({
            "reward/mean": reward_mean,
            "reward/std": math.sqrt(reward_var * n_valid / (n_valid - 1)) if n_valid > 1 else 0.0,
            "reward/non_finite": n_nonfinite,
            "kl/mean": kl_per_sample,
            "kl/coef": kl_coef_used,
            "response/length_mean": resp_tokens / n_total,
            "response/ended_fraction": n_ended / n_total,
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
