"""The least-KL detox: how far a policy must move from its base to reach a toxic rate, if it writes
no new language. Plain numbers, no models.

Of all policies whose replies are toxic at rate q on average over prompts, the one closest to the
base in KL is the base tilted against its toxic replies, pi ~ base * exp(-lam * toxic), with one
lam for all prompts: the optimum of the KL-regularized objective max E[r] - beta KL with a
toxic/clean reward, lam = (r_clean - r_toxic) / beta. Within a prompt's clean replies, and within
its toxic ones, it keeps the base's proportions; only each prompt's toxic share moves, from p to
p e^-lam / (p e^-lam + 1 - p). At q -> 0 it is the base conditioned on a clean reply (KL -ln P(clean)).
A trained policy at toxic rate q is read against it: more KL, or less diversity (distinct-n of its
samples), than the tilted base at q is what the optimization cost beyond what the detox itself asks.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence


def tilted_toxic_shares(base_shares: Sequence[float], lam: float) -> list[float]:
    """Each prompt's toxic share under pi ~ base * exp(-lam * toxic)."""
    return [p * math.exp(-lam) / (p * math.exp(-lam) + 1 - p) for p in base_shares]


def kl_to_base(base_shares: Sequence[float], shares: Sequence[float]) -> float:
    """KL(pi || base) per reply, averaged over prompts. pi keeps the base's proportions within the
    toxic and within the clean replies, so only the two shares contribute (a Bernoulli KL)."""
    def bernoulli_kl(q: float, p: float) -> float:
        return sum(a * math.log(a / b) for a, b in ((q, p), (1 - q, 1 - p)) if a > 0)
    return statistics.mean(bernoulli_kl(q, p) for q, p in zip(shares, base_shares))


def tilt_for_toxic_rate(base_shares: Sequence[float], rate: float, tolerance: float = 1e-12) -> float:
    """The lam whose mean toxic share over prompts is ``rate`` (bisection: the mean share falls
    strictly with lam wherever some prompt has 0 < p < 1)."""
    base_rate = statistics.mean(base_shares)
    if not 0 < rate <= base_rate:
        raise ValueError(f"toxic rate {rate} is not in (0, the base's {base_rate:.4f}]")
    if any(p >= 1 for p in base_shares):
        raise ValueError("a prompt whose replies are all toxic cannot be detoxed by reweighting its replies")
    low, high = 0.0, 1.0
    while statistics.mean(tilted_toxic_shares(base_shares, high)) > rate:
        low, high = high, 2 * high
    while high - low > tolerance * max(1.0, high):
        mid = (low + high) / 2
        low, high = (mid, high) if statistics.mean(tilted_toxic_shares(base_shares, mid)) > rate else (low, mid)
    return (low + high) / 2
