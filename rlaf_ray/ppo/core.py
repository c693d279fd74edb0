"""Pure PPO math for language models: masked statistics, KL, GAE, losses, KL controllers.

No Ray, no models: tensors in, tensors out, so every function is unit-tested against numbers
computed by hand. Shapes: ``[batch, response_len]`` with a 0/1 ``mask`` over response tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Log-ratios are clamped to +-this before exp: e^20 ~ 5e8 is finite, e^100 is inf in float32, and
# inf * 0 in a backward pass is NaN.
LOG_RATIO_CLAMP = 20.0


def masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` where ``mask`` is set, 0 elsewhere. Not ``x * mask``: inf * 0 is NaN, and an inf or NaN
    at a padding position (an EOS masked out there, a dropped sample) must not reach a sum."""
    return torch.where(mask.bool(), x, x.new_zeros(()))


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return masked(x, mask).sum() if dim is None else masked(x, mask).sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    # clamp: a minibatch whose samples were all dropped (mask all zero) contributes 0, not NaN.
    if dim is None:
        return masked_sum(x, mask) / mask.sum().clamp(min=1)
    return masked_sum(x, mask, dim) / mask.sum(dim=dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  mean: torch.Tensor | None = None, var: torch.Tensor | None = None) -> torch.Tensor:
    """Normalize to unit variance over masked entries (zero mean too when ``shift_mean``).

    ``mean``/``var`` may be given from statistics gathered over all learners.
    """
    mean = masked_mean(x, mask) if mean is None else mean
    var = masked_var(x, mask) if var is None else var
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return masked(out, mask)


def weigh_positive(advantages: torch.Tensor, weight: float) -> torch.Tensor:
    """Scale the positive advantages by ``weight``, leave the negative ones (W-REINFORCE, Zhu et
    al. 2025). Why: a negative advantage lowers its sampled token and hands the freed mass to
    every other token in proportion to the policy's own probabilities (the base's, early on),
    which is the tilted base the KL-regularized optimum is; a positive one raises the sampled
    token itself, and which of a prompt's many clean replies happen to be sampled is noise that
    concentrates the policy onto some of them. 1: the plain estimator."""
    if weight == 1.0:
        return advantages
    return torch.where(advantages > 0, advantages * weight, advantages)


def truncated_is_weights(proximal: torch.Tensor, behaviour: torch.Tensor, stale: torch.Tensor,
                         truncation: float) -> torch.Tensor:
    """Decoupled PPO's per-token weight pi_prox / pi_behav, truncated at ``truncation``, for the
    tokens of stale responses (``stale``: ``[batch]`` bool); exactly 1 elsewhere. ``proximal``:
    the learner's log-probs before the update; ``behaviour``: the rollout's, as it sampled."""
    log_ratio = (proximal - behaviour).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    weights = torch.exp(log_ratio).clamp(max=truncation)
    return torch.where(stale[:, None], weights, torch.ones_like(weights))


def full_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Exact KL(policy || reference) at each position, over the whole vocabulary: ``[..., V]``
    log-probabilities in, ``[...]`` nats out. Unlike a sampled estimate it sees the mass a policy
    moved to tokens it did not sample this time."""
    return (logprobs.exp() * (logprobs - ref_logprobs)).sum(dim=-1)


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy.

    k1 = log r (unbiased, can be negative), k2 = (log r)^2 / 2, k3 = (r' - 1) - log r' with
    r' = p_ref / p (unbiased and non-negative); see Schulman, "Approximating KL divergence".
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        # Clamped (both terms, so k3 stays >= 0): it grows like e^-log_ratio and is used with
        # gradient in the loss, where a token pushed out of top-k has a log-prob near -3e38.
        log_ratio = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator: expected k1, k2 or k3, got {estimator!r}")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a right-padded mask (0 for an all-zero row)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask.long()).max(dim=1).values


def shaped_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                   kl_coef: float) -> torch.Tensor:
    """Per-token reward: ``-kl_coef * kl`` on every response token, plus the score on the last."""
    rewards = -kl_coef * masked(kl, mask)
    last = last_token_index(mask)
    rewards[torch.arange(rewards.shape[0]), last] += scores * (mask.sum(dim=1) > 0)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over response tokens. Returns (advantages, returns).

    Responses are right-padded; rewards and values past a response's end are zeroed, so the
    value bootstrapped after its last token is 0 and padding contributes nothing.
    """
    rewards = masked(rewards, mask)
    values = masked(values, mask)
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages[:, t] = last_gae
    advantages = masked(advantages, mask)
    returns = advantages + values
    return advantages, returns


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, cliprange: float) -> PolicyLossOutput:
    """PPO's clipped surrogate, averaged over response tokens.

    The log-ratio is zeroed outside the mask and clamped before exp, so that neither a padding
    position nor one runaway token turns the loss or its gradient into inf/NaN."""
    log_ratio = masked(logprobs - old_logprobs, mask).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return PolicyLossOutput(loss, clip_fraction.detach(), approx_kl(logprobs, old_logprobs, mask))


def approx_kl(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How far a step moved the policy on the sampled tokens: half the mean squared log-ratio
    (the early-stop statistic of OpenAI baselines / TRL 0.11), clamped like the loss's."""
    log_ratio = masked(logprobs - old_logprobs, mask).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (0.5 * masked_mean(log_ratio.detach()**2, mask))


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Value loss clipped around the old values (as in PPO2). Returns (loss, clip fraction)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction.detach()


class FixedKLController:
    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019): move the coefficient so the measured KL approaches ``target``.

    Each update moves it by ``error * n_steps / horizon`` (error clipped to +-0.2), with
    ``n_steps / horizon`` capped at 1: a batch larger than the horizon moves it by at most 20%,
    not by up to 100% (a short horizon, so that beta can move within a run, stays safe with
    large batches)."""

    def __init__(self, kl_coef: float, target: float, horizon: int, floor: float = 0.0):
        super().__init__(kl_coef)
        self.target = target
        self.horizon = horizon
        self.floor = floor

    def update(self, current_kl: float, n_steps: int) -> None:
        if not math.isfinite(current_kl):
            return
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        # The floor: batches under the target lower the price of KL, and a policy may then
        # spend it on moves the reward does not see (narrowing its replies) before the KL shows.
        self.value = max(self.value * (1.0 + proportional_error * min(n_steps / self.horizon, 1.0)), self.floor)


class RunningMoments:
    """Mean and standard deviation of every score seen so far, merged batch by batch.

    A batch arrives as its count, sum and sum of squares (already summed over all learner ranks,
    so every rank holds the same statistics) and is merged with Chan et al.'s parallel update.
    Before the second score the standard deviation is taken as 1 (no scaling).
    """

    def __init__(self):
        self.count, self.mean, self.m2 = 0.0, 0.0, 0.0

    def update(self, count: float, total: float, total_sq: float) -> None:
        if count <= 0:
            return
        batch_mean = total / count
        batch_m2 = max(total_sq - count * batch_mean**2, 0.0)
        merged = self.count + count
        delta = batch_mean - self.mean
        self.mean += delta * count / merged
        self.m2 += batch_m2 + delta**2 * self.count * count / merged
        self.count = merged

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0

    def normalize(self, x: torch.Tensor, clip: float | None = None) -> torch.Tensor:
        """``(x - mean) / std``, then clipped to +-``clip`` (None: not clipped)."""
        out = (x - self.mean) / max(self.std, 1e-8)
        return out if clip is None else out.clamp(-clip, clip)

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = float(state["count"]), float(state["mean"]), float(state["m2"])
