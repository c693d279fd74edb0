"""The PPO update on one learner rank.

Reads top to bottom like CleanRL's ``ppo.py``: scores normalized by their running statistics,
old log-probs and values, reference log-probs (adapter disabled), KL-shaped rewards, GAE,
whitened advantages (or, with ``estimator`` rloo/grpo, no values: each response compared with
the other responses to its prompt, ``ppo/groups.py``), then up to ``ppo_epochs`` passes over
shuffled minibatches with clipped policy and value losses (plus the KL term when
``kl_in`` is loss or both) and gradient-norm clipping, stopped early when the approximate KL passes
``early_stop_kl``. Under DDP the backward pass all-reduces gradients; batch statistics (score
moments, advantage whitening, the early-stop KL, KL for the adaptive controller, reported
metrics) are reduced over all ranks too, so every rank takes the same decisions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import get_scheduler
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from rlaf_ray.config import GenerationSettings, PPOSettings
from rlaf_ray.ppo import core
from rlaf_ray.ppo.batch import RolloutBatch
from rlaf_ray.ppo.distributed import global_masked_stats, global_sums, world_size
from rlaf_ray.ppo.groups import GRPO_EPS, group_advantages, sequence_rewards
from rlaf_ray.ppo.sampling import SamplingDistribution


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (or the module itself)."""
    return model.module if hasattr(model, "module") else model


@dataclass
class Targets:
    """What the epochs learn from, fixed before the first minibatch."""

    mask: torch.Tensor  # response tokens that take part (non-finite scores left out)
    old_logprobs: torch.Tensor
    old_values: torch.Tensor | None  # None without a critic (rloo, grpo)
    advantages: torch.Tensor
    returns: torch.Tensor | None
    kl: torch.Tensor  # per token, what kl/mean reports and beta reads: exact with kl_estimator=full, else k1
    ref_logprobs: torch.Tensor  # for the KL term of the loss when kl_in=loss or both
    old_untruncated: torch.Tensor  # old log-probs without top-k/top-p (the KL; how far a step moved)
    ref_full: torch.Tensor | None = None  # the reference's whole distribution (kl_estimator=full)
    is_weights: torch.Tensor | None = None  # off-policy correction of stale samples (max_staleness)
    staleness: torch.Tensor | None = None  # per response: updates between sampling and this one


class PPOLearner:
    def __init__(self, cfg: PPOSettings, model: nn.Module,
                 generation: GenerationSettings | None = None, eos_token_id: int | None = None):
        self.cfg = cfg
        self.model = model  # possibly DDP-wrapped; unwrap(model) for no-grad passes
        # Log-probs follow the sampling rules the rollout used (see ppo/sampling.py).
        self.generation = generation or GenerationSettings()
        self.sampling = SamplingDistribution(self.generation, eos_token_id)
        self.params = [p for p in model.parameters() if p.requires_grad]
        # Clipped apart: a large value-loss gradient must not shrink the policy's step.
        value_head = unwrap(model).value_head
        value_ids = {id(p) for p in value_head.parameters()} if value_head is not None else set()
        self.value_params = [p for p in self.params if id(p) in value_ids]
        self.policy_params = [p for p in self.params if id(p) not in value_ids]
        # torch's AdamW decays by 0.01 unless told otherwise; an adapter should not shrink to 0.
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.lr_scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer, num_warmup_steps=0,
                                          num_training_steps=cfg.num_iterations)
        self.kl_ctl = (core.AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon, cfg.kl_coef_min or 0.0)
                       if cfg.adaptive_kl else core.FixedKLController(cfg.kl_coef))
        self.reward_stats = core.RunningMoments()
        self.generator = torch.Generator().manual_seed(cfg.seed)

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    def forward(self, model: nn.Module, batch: RolloutBatch, need_entropy: bool = False,
                truncate: bool = True, full: list | None = None, untruncated: list | None = None):
        """Log-probs of the response tokens under the distribution the rollout sampled from,
        values before each of them, optionally entropy. ``truncate=False``: without top-k/top-p.
        ``full``: a list that receives the whole untruncated log-distribution at each position;
        ``untruncated``: one that receives the tokens' untruncated log-probs (what the KL to the
        untruncated reference compares)."""
        logits, values = model(**batch.inputs)
        start, end = batch.logits_start, batch.logits_start + batch.response_ids.shape[1]
        raw = logits[:, start:end].float()
        logits = self.sampling(raw, batch, truncate)
        plain = logits
        if (full is not None or untruncated is not None) and truncate and self.sampling.truncates():
            plain = self.sampling(raw, batch, False)
        if full is not None:
            full.append(torch.log_softmax(plain, dim=-1))
        logprobs = selective_log_softmax(logits, batch.response_ids)
        if untruncated is not None:
            untruncated.append(logprobs if plain is logits else selective_log_softmax(plain, batch.response_ids))
        entropy = entropy_from_logits(logits) if need_entropy else None
        return logprobs, None if values is None else values[:, start:end].float(), entropy

    @torch.no_grad()
    def _reference_logprobs(self, batch: RolloutBatch, full: list | None = None) -> torch.Tensor:
        inner = unwrap(self.model)
        # The frozen base is the reference: the same network with the adapter switched off, under
        # the same temperature, repetition penalty and EOS rule but not truncated: a token outside
        # the base's own top-k/top-p set would make the KL infinite, and against a reference
        # truncated to the policy's set a policy could escape the penalty by sharpening.
        with inner.policy.disable_adapter():
            logprobs, _, _ = self.forward(inner, batch, truncate=False, full=full)
        return logprobs

    def step(self, batch: RolloutBatch, scores: torch.Tensor, ended: torch.Tensor,
             critic_only: bool = False, behaviour: torch.Tensor | None = None,
             staleness: torch.Tensor | None = None) -> dict[str, float]:
        """One PPO update on this rank's batch; returns the batch's metrics (over all ranks).
        ``critic_only`` (``critic_warmup``): the value loss alone, the adapter and beta unchanged.
        ``behaviour``, ``staleness``: the sampling policy's token log-probs and each response's
        age in updates; stale responses are corrected by decoupled PPO (``truncated_is_weights``)."""
        scores = scores.to(device=self.device, dtype=torch.float32)
        finite = torch.isfinite(scores)
        # Non-finite scores become 0; their samples leave the update through the mask.
        scores = torch.where(finite, scores, torch.zeros_like(scores))
        score_sums = self.score_sums(scores, finite)
        normalized = self.normalized_scores(scores, finite, score_sums)
        targets = self.targets(batch, self.shaped_scores(normalized, ended), finite)
        if behaviour is not None and staleness is not None:
            targets = self.off_policy(targets, behaviour.to(self.device), staleness.to(self.device))
        stats = self.run_epochs(batch, targets, critic_only)
        stats["learning_rate"] = [self.lr_scheduler.get_last_lr()[0]]  # the rate this update used
        self.lr_scheduler.step()
        return self.batch_metrics(batch, targets, stats, score_sums, normalized, finite, ended, critic_only)

    def score_sums(self, scores: torch.Tensor, finite: torch.Tensor) -> dict[str, float]:
        """Count, sum and sum of squares of the batch's finite scores over all ranks (one
        all-reduce, read by the normalization and by the batch metrics)."""
        valid, s64 = finite.double(), scores.double()
        return global_sums({"n": valid.sum().item(), "sum": (s64 * valid).sum().item(),
                            "sq": (s64**2 * valid).sum().item()}, self.device)

    def normalized_scores(self, scores: torch.Tensor, finite: torch.Tensor,
                          score_sums: dict[str, float]) -> torch.Tensor:
        """``(score - mean) / std`` over all finite scores so far (this batch's included, all ranks),
        clipped to +-reward_clip: a bounded objective whatever the classifier's scale. The
        statistics are kept (and reported) with ``reward_norm`` off too."""
        self.reward_stats.update(score_sums["n"], score_sums["sum"], score_sums["sq"])
        if not self.cfg.reward_norm:
            return scores
        normalized = self.reward_stats.normalize(scores, self.cfg.reward_clip)
        return torch.where(finite, normalized, torch.zeros_like(normalized))

    def shaped_scores(self, scores: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
        """The missing-EOS penalty subtracted from responses that never ended (as TRL does)."""
        if self.cfg.missing_eos_penalty is not None:
            scores = scores - self.cfg.missing_eos_penalty * (~ended.to(self.device)).float()
        return scores

    def targets(self, batch: RolloutBatch, scores: torch.Tensor, finite: torch.Tensor) -> Targets:
        """Old log-probs and values, reference log-probs, KL-shaped rewards, GAE, whitening."""
        cfg = self.cfg
        # The batch keeps its size so every rank runs the same number of minibatch passes.
        mask = batch.response_mask.clone()
        mask[~finite] = 0.0
        exact = cfg.kl_estimator == "full"
        with torch.no_grad():  # dropout is off in the model
            old_untruncated: list = []
            old_full = [] if exact else None
            old_logprobs, old_values, _ = self.forward(unwrap(self.model), batch, untruncated=old_untruncated,
                                                       full=old_full)
            ref_full = [] if exact else None
            ref_logprobs = self._reference_logprobs(batch, ref_full)
            # The KL that kl/mean reports and the adaptive beta reads: the exact KL when the loss
            # computes it (kl_estimator=full), so that beta aims at the KL the loss prices. The k1
            # sum over nucleus-sampled tokens never sees the mass outside the nucleus (on the
            # offline world it read 0.75-1.0x the exact KL per reply) and is heavy-tailed: one
            # sampled swerve of 6-8 nats moves a batch's mean.
            exact_kl = core.masked(core.full_kl(old_full[0], ref_full[0]), mask) if exact else None
            del old_full  # batch x tokens x vocab: not kept beyond this
        # k1 per token: the reward's penalty (the only unbiased one there), and the reading above
        # without the exact KL. Policy and reference both untruncated: top-k/top-p is a decoding
        # rule applied to both, and the truncated policy's own renormalization (-log of the kept
        # mass, ~0.1 nat a token at top_p 0.9) is not a move away from the base; counted, it would
        # spend the KL target before the first update. The ratio of the clipped loss stays on the
        # sampled distribution.
        kl = core.masked(old_untruncated[0] - ref_logprobs, mask)
        # kl_in=both: each position's exact KL is a reward too. The loss term's gradient is the
        # KL's at the positions visited; which positions a reply visits depends on the policy as
        # well, and that part of the gradient of E[KL] is the score-function term, from the KL
        # the reply goes on to incur (Rao-Blackwellized k1: its expectation, given the position).
        reward_kl = exact_kl if cfg.kl_in == "both" else kl
        kl_coef = self.kl_ctl.value if cfg.kl_in in ("reward", "both") else 0.0
        returns = None
        if cfg.estimator == "gae":
            rewards = core.shaped_rewards(scores, reward_kl, mask, kl_coef)
            advantages, returns = core.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        else:
            # One advantage per response, on each of its tokens (mask zeroes the rest).
            sequence = sequence_rewards(scores, reward_kl, mask, kl_coef)
            per_response = group_advantages(sequence, finite, cfg.samples_per_prompt, cfg.estimator,
                                            cfg.scale_rewards)
            if cfg.estimator == "grpo" and cfg.scale_rewards == "batch":
                _, var = global_masked_stats(sequence, finite)  # the rewards' std over every learner's batch
                per_response = per_response / (var.sqrt() + GRPO_EPS)
            advantages = per_response[:, None] * mask
        # grpo's advantages are on the scale scale_rewards chose (whitening would undo it).
        if cfg.whiten_advantages and cfg.estimator != "grpo":
            mean, var = global_masked_stats(advantages, mask)
            advantages = core.masked_whiten(advantages, mask, mean=mean, var=var)
        # After whitening: the sign that counts is the one against the batch's baseline.
        advantages = core.weigh_positive(advantages, cfg.positive_advantage_weight)
        reported_kl = exact_kl if exact else kl
        return Targets(mask, old_logprobs, old_values, advantages, returns, reported_kl, ref_logprobs,
                       old_untruncated[0], ref_full[0] if ref_full else None)

    def off_policy(self, t: Targets, behaviour: torch.Tensor, staleness: torch.Tensor) -> Targets:
        """Decoupled PPO: the clip stays around the learner's policy before this update (the
        proximal policy, ``old_logprobs``); each token of a stale response is weighted by the
        truncated ratio of that policy to the one that sampled it, through its advantage (the
        clipped objective is linear in a non-negative weight)."""
        weights = core.truncated_is_weights(t.old_logprobs, behaviour, staleness > 0, self.cfg.is_truncation)
        weights = torch.where(t.mask.bool(), weights, torch.ones_like(weights))
        return dataclasses.replace(t, advantages=t.advantages * weights, is_weights=weights, staleness=staleness)

    def run_epochs(self, batch: RolloutBatch, targets: Targets, critic_only: bool = False) -> dict[str, list[float]]:
        """Up to ``ppo_epochs`` passes over shuffled minibatches; each minibatch's statistics, and
        ``epochs_run`` (minibatch steps taken / minibatches per epoch) and ``early_stopped``."""
        size = batch.response_ids.shape[0]
        mb_size = size // self.cfg.num_minibatches
        stats: dict[str, list[float]] = {}
        steps, stopped = 0, False
        self.model.train()
        for _ in range(self.cfg.ppo_epochs):
            order = torch.randperm(size, generator=self.generator).to(self.device)
            for first in range(0, size, mb_size):
                mb_stats = self.minibatch_step(batch, targets, order[first:first + mb_size], critic_only)
                if mb_stats is None:
                    stopped = True
                    break
                steps += 1
                for key, value in mb_stats.items():
                    stats.setdefault(key, []).append(value)
            if stopped:
                break
        self.model.eval()
        stats["epochs_run"] = [steps / math.ceil(size / mb_size)]
        stats["early_stopped"] = [float(stopped)]
        return stats

    def minibatch_step(self, batch: RolloutBatch, t: Targets, idx: torch.Tensor,
                       critic_only: bool = False) -> dict[str, float] | None:
        """Clipped policy and value losses on one minibatch, one optimizer step; None (and no step)
        when the minibatch's approximate KL, averaged over all ranks, passes ``early_stop_kl``.
        ``critic_only``: the value loss alone (the policy does not move, so nothing to stop)."""
        cfg = self.cfg
        mask = t.mask[idx]
        full = [] if t.ref_full is not None else None
        untruncated: list = []
        logprobs, values, entropy = self.forward(self.model, batch.select(idx), need_entropy=True, full=full,
                                                 untruncated=untruncated)
        pg = core.clipped_policy_loss(logprobs, t.old_logprobs[idx], t.advantages[idx], mask, cfg.cliprange)
        # How far the step moved the policy, read without top-k/top-p (the same as the loss's
        # log-ratio when nothing truncates): a sampled token at the edge of the top-p set can
        # leave it after a small step, its sampled log-prob dropping to the floor and its
        # log-ratio to the clamp (the clipped loss ignores it), and that one token would stop the epochs.
        moved = core.approx_kl(untruncated[0], t.old_untruncated[idx], mask)
        if cfg.early_stop_kl is not None and not critic_only:
            # One all-reduce, so every rank stops at the same minibatch (a rank that stepped alone
            # would wait forever in DDP's gradient all-reduce).
            mean_kl = global_sums({"approx_kl": moved.item()}, self.device)["approx_kl"] / world_size()
            if mean_kl > cfg.early_stop_kl:
                return None
        vf_loss = vf_clip = torch.zeros((), device=self.device)
        if values is not None:
            vf_loss, vf_clip = core.clipped_value_loss(values, t.old_values[idx], t.returns[idx], mask,
                                                       cfg.cliprange_value)
        # Per-token KL of the current policy to the reference: reported always, a loss term (with
        # gradient) when kl_in is loss or both. Masked before the estimator: a padding position's log-prob
        # may be the most negative float.
        if full is not None:
            ref_full = t.ref_full[idx]  # a copy of batch x tokens x vocab: taken once per minibatch
            per_token = core.full_kl(full[0], ref_full)
        else:
            per_token = core.kl_estimate(core.masked(untruncated[0], mask), core.masked(t.ref_logprobs[idx], mask),
                                         cfg.kl_estimator)
        kl_to_ref = core.masked_mean(per_token, mask)
        kl_term, extra = kl_to_ref, {}
        if cfg.kl_forward_weight:
            # KL(base || policy): its gradient in the logits is policy - base at each position, so
            # it pulls back each base-likely token the policy drops, which the reverse KL, weighted
            # by the policy's own probabilities, hardly sees.
            forward = core.masked_mean(core.full_kl(ref_full, full[0]), mask)
            kl_term = (1 - cfg.kl_forward_weight) * kl_to_ref + cfg.kl_forward_weight * forward
            extra["forward_kl_to_ref"] = forward.item()
        mean_entropy = core.masked_mean(entropy, mask)
        loss = pg.loss + cfg.vf_coef * vf_loss
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * mean_entropy
        if cfg.kl_in in ("loss", "both"):
            loss = loss + self.kl_ctl.value * kl_term
        if critic_only:
            # Zero, not absent: DDP expects a gradient for every trainable parameter on every rank.
            loss = 0.0 * (pg.loss + kl_to_ref) + cfg.vf_coef * vf_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces gradients here
        grad_norm, value_grad_norm = self.clip_gradients()
        self.optimizer.step()
        return {"policy_loss": pg.loss.item(), "value_loss": vf_loss.item(),
                "entropy": mean_entropy.item(),
                "clip_fraction": pg.clip_fraction.item(), "value_clip_fraction": vf_clip.item(),
                "approx_kl": moved.item(), "kl_to_ref": kl_to_ref.item(), "grad_norm": grad_norm,
                "value_grad_norm": value_grad_norm, **extra}

    def clip_gradients(self) -> tuple[float, float]:
        """Norms of the adapter's and the value head's gradients (before clipping), each clipped
        to ``max_grad_norm`` on its own."""
        norms = []
        for params in (self.policy_params, self.value_params):
            grads = [p.grad for p in params if p.grad is not None]
            if not grads:
                norms.append(0.0)
            elif self.cfg.max_grad_norm is not None:
                norms.append(float(torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)))
            else:
                norms.append(float(torch.nn.utils.get_total_norm(grads)))
        return norms[0], norms[1]

    def batch_metrics(self, batch: RolloutBatch, t: Targets, stats: dict[str, list[float]],
                      score_sums: dict[str, float], normalized: torch.Tensor, finite: torch.Tensor,
                      ended: torch.Tensor, critic_only: bool = False) -> dict[str, float]:
        """Statistics of the batch over all ranks (``score_sums``: of the raw finite scores;
        ``normalized``: after reward normalization, before the missing-EOS penalty); the KL
        controller moves on their KL per reply: exact with kl_estimator=full, k1 otherwise."""
        valid = finite.float()
        s = global_sums({
            "normalized": (normalized * valid).sum().item(), "samples": float(batch.response_ids.shape[0]),
            "non_finite": (~finite).sum().item(), "kl": core.masked_sum(t.kl, t.mask).item(),
            "response_tokens": batch.response_mask.sum().item(), "ended": ended.float().sum().item(),
        }, self.device)
        s.update(valid=score_sums["n"], score=score_sums["sum"], score_sq=score_sums["sq"])
        n_valid = max(s["valid"], 1.0)
        reward_mean = s["score"] / n_valid
        reward_var = max(s["score_sq"] / n_valid - reward_mean**2, 0.0)
        kl_per_sample = s["kl"] / n_valid
        kl_coef_used = self.kl_ctl.value
        if not critic_only:  # the base's own KL (zero) says nothing about beta
            self.kl_ctl.update(kl_per_sample, int(s["samples"]))

        means = global_sums({k: sum(v) / len(v) for k, v in stats.items() if v}, self.device)
        metrics = {f"ppo/{k}": m / world_size() for k, m in means.items()}
        metrics.update({
            "reward/mean": reward_mean,
            "reward/std": math.sqrt(reward_var * s["valid"] / (s["valid"] - 1)) if s["valid"] > 1 else 0.0,
            "reward/normalized_mean": s["normalized"] / n_valid,
            "reward/running_mean": self.reward_stats.mean,
            "reward/running_std": self.reward_stats.std,
            "reward/non_finite": s["non_finite"],
            "kl/mean": kl_per_sample,
            "kl/coef": kl_coef_used,
            "response/length_mean": s["response_tokens"] / s["samples"],
            "response/ended_fraction": s["ended"] / s["samples"],
            "ppo/critic_only": float(critic_only),
        })
        metrics.update(self.off_policy_metrics(t))
        return metrics

    def off_policy_metrics(self, t: Targets) -> dict[str, float]:
        """Staleness and importance weights over all ranks (the weights over stale tokens only;
        1 when none is stale). The synchronous loop (no behaviour log-probs, on every rank alike)
        has nothing to reduce."""
        if t.staleness is None:
            return {"offpolicy/staleness_mean": 0.0, "offpolicy/staleness_max": 0.0,
                    "offpolicy/is_weight_mean": 1.0, "offpolicy/is_truncated_fraction": 0.0}
        staleness, weights = t.staleness, t.is_weights
        stale_tokens = t.mask * (staleness > 0).float()[:, None]
        truncated = (weights >= self.cfg.is_truncation).float() * stale_tokens
        s = global_sums({"responses": float(staleness.numel()), "staleness": staleness.float().sum().item(),
                         "stale_tokens": stale_tokens.sum().item(), "weight": (weights * stale_tokens).sum().item(),
                         "truncated": truncated.sum().item()}, self.device)
        most = staleness.max().float()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX)
        stale = s["stale_tokens"]
        return {"offpolicy/staleness_mean": s["staleness"] / max(s["responses"], 1.0),
                "offpolicy/staleness_max": float(most),
                "offpolicy/is_weight_mean": s["weight"] / stale if stale else 1.0,
                "offpolicy/is_truncated_fraction": s["truncated"] / stale if stale else 0.0}

    # Checkpoint state beyond the adapter.
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "kl_ctl": self.kl_ctl.state_dict(),
                "generator": self.generator.get_state(), "reward_stats": self.reward_stats.state_dict(),
                "lr_scheduler": self.lr_scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.generator.set_state(state["generator"])
        # Checkpoints written before reward normalization existed start its statistics afresh.
        if "reward_stats" in state:
            self.reward_stats.load_state_dict(state["reward_stats"])
        # Older checkpoints ran a constant rate, which the optimizer's own state already restores.
        if "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
