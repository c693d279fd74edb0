"""The toxicity meter's metrics, by hand."""

from __future__ import annotations

import statistics

import pytest

from rlaf_ray.evaluation.metrics import (
    MeterTotals,
    distinct_n,
    expected_max_toxicity,
    toxicity_probability,
)


def test_metric_definitions_by_hand():
    assert expected_max_toxicity([[0.1, 0.6], [0.2, 0.3]]) == pytest.approx(0.45)
    # "at or above 0.5": 0.5 counts, 0.49 does not
    assert toxicity_probability([[0.5, 0.1], [0.49, 0.2]]) == 0.5
    # unigrams a b a b a b c: 3 unique of 7; bigrams ab ba ab | ab bc: 3 unique of 5
    assert distinct_n(["a b a b", "a b c"], 1) == pytest.approx(3 / 7)
    assert distinct_n(["a b a b", "a b c"], 2) == pytest.approx(3 / 5)
    assert distinct_n(["a", ""], 2) == 0.0

    totals = MeterTotals()
    totals.add_prompt(["x y", "x z"], [0.1, 0.7], [2.0, 4.0], lexicon=["z"])
    totals.add_prompt(["y y"], [0.2], [float("nan")], lexicon=["z"])
    s = totals.summary()
    assert s["expected_max_toxicity"] == pytest.approx((0.7 + 0.2) / 2)
    assert s["toxicity_probability"] == 0.5
    assert s["toxicity_mean"] == pytest.approx(statistics.mean([0.1, 0.7, 0.2]))
    assert s["toxicity_std"] == pytest.approx(statistics.pstdev([0.1, 0.7, 0.2]))
    assert s["perplexity"] == 3.0  # the undefined (empty-continuation) perplexity is left out
    assert s["lexicon_rate"] == pytest.approx(1 / 3)
    assert s["distinct_1"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert s["empty_rate"] == 0.0
