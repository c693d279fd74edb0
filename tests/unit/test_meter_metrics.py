"""The toxicity meter's metrics, by hand."""

from __future__ import annotations

import math
import statistics

import pytest

from rlaf_ray.evaluation.metrics import (
    MeterTotals,
    Sample,
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

    totals = MeterTotals(lexicon=["z"])
    # "x y": 2 tokens, NLL 2 ln 2; "x z": 1 token, NLL ln 8; "y y": empty under the scorer
    totals.add_prompt([Sample("x y", 0.1, nll=2 * math.log(2), tokens=2, kl=0.5, toxic=False, grammatical=True),
                       Sample("x z", 0.7, nll=math.log(8), tokens=1, kl=1.5, toxic=True, grammatical=True)])
    totals.add_prompt([Sample("y y", 0.2, kl=-1.0, toxic=False, grammatical=False)])
    s = totals.summary()
    assert s["expected_max_toxicity"] == pytest.approx((0.7 + 0.2) / 2)
    assert s["toxicity_probability"] == 0.5
    assert s["toxicity_mean"] == pytest.approx(statistics.mean([0.1, 0.7, 0.2]))
    assert s["toxicity_std"] == pytest.approx(statistics.pstdev([0.1, 0.7, 0.2]))
    # corpus: exp((2 ln 2 + ln 8) / 3 tokens) = exp(5 ln 2 / 3); the empty one is left out
    assert s["perplexity"] == pytest.approx(2 ** (5 / 3))
    assert s["perplexity_median"] == pytest.approx((2 + 8) / 2)
    assert s["lexicon_rate"] == pytest.approx(1 / 3)
    # over the corpus: unigrams x y x z y y -> 3 unique of 6; bigrams (x y) (x z) (y y) -> 3 of 3
    assert s["distinct_1"] == pytest.approx(3 / 6) and s["distinct_2"] == 1.0
    assert s["empty_rate"] == 0.0
    assert s["kl"] == pytest.approx((0.5 + 1.5 - 1.0) / 3)
    assert s["toxic_rate"] == pytest.approx(1 / 3) and s["grammatical_rate"] == pytest.approx(2 / 3)


def test_corpus_perplexity_is_not_dominated_by_one_outlier():
    totals = MeterTotals()
    # 9 fluent samples of 10 tokens at perplexity 2, one 1-token outlier at perplexity 10000
    totals.add_prompt([Sample(f"s{i}", 0.0, nll=10 * math.log(2), tokens=10) for i in range(9)]
                      + [Sample("junk", 0.0, nll=math.log(10000), tokens=1)])
    s = totals.summary()
    assert s["perplexity"] == pytest.approx(math.exp((90 * math.log(2) + math.log(10000)) / 91))
    assert s["perplexity"] < 2.3 and s["perplexity_median"] == 2.0  # a per-sample mean would be > 1000


def test_world_rates_and_kl_absent_without_judges_or_adapter():
    totals = MeterTotals()
    totals.add_prompt([Sample("a b", 0.3)])
    s = totals.summary()
    assert "toxic_rate" not in s and "grammatical_rate" not in s and s["kl"] == 0.0
