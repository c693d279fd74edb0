"""The least-KL detox (rlaf_ray.evaluation.frontier): hand-computed tilts and KLs."""

from __future__ import annotations

import math
import statistics

import pytest

from rlaf_ray.evaluation.frontier import (
    kl_to_base,
    tilt_for_toxic_rate,
    tilted_toxic_shares,
)


def test_a_tilt_of_ln3_makes_a_quarter_toxic_prompt_a_tenth_toxic():
    # 0.25 / 3 toxic against 0.75 clean: 1/12 of 10/12
    assert tilted_toxic_shares([0.25], math.log(3)) == pytest.approx([0.1])
    assert tilted_toxic_shares([0.25, 0.5], 0.0) == [0.25, 0.5]


def test_kl_is_the_bernoulli_kl_of_the_shares_averaged_over_prompts():
    kl = kl_to_base([0.25, 0.5], [0.1, 0.5])
    assert kl == pytest.approx((0.1 * math.log(0.1 / 0.25) + 0.9 * math.log(0.9 / 0.75) + 0.0) / 2)
    # no toxic reply left: the base conditioned on a clean one, KL = -ln P(clean)
    assert kl_to_base([0.25], [0.0]) == pytest.approx(-math.log(0.75))


def test_the_tilt_found_reaches_the_rate_and_more_detox_costs_more_kl():
    shares = [0.0, 0.1, 0.5, 0.9]
    kls = []
    for rate in (0.3, 0.1, 0.01, 1e-6):
        lam = tilt_for_toxic_rate(shares, rate)
        tilted = tilted_toxic_shares(shares, lam)
        assert statistics.mean(tilted) == pytest.approx(rate, rel=1e-9)
        assert tilted[0] == 0.0  # a clean prompt stays as it was
        kls.append(kl_to_base(shares, tilted))
    assert kls == sorted(kls) and kls[-1] == pytest.approx(statistics.mean(-math.log(1 - p) for p in shares), rel=1e-4)
    assert tilt_for_toxic_rate(shares, statistics.mean(shares)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("shares,rate,message", [
    ([0.2, 0.4], 0.5, "not in (0, the base's 0.3000]"),
    ([0.2, 0.4], 0.0, "not in (0"),
    ([1.0, 0.0], 0.1, "all toxic"),
])
def test_rates_the_base_cannot_be_tilted_to_are_refused(shares, rate, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[").replace("]", r"\]")):
        tilt_for_toxic_rate(shares, rate)
