"""The offline detox world end to end through the real `rlaf-ray demo` command: the demo's
training as shipped, its before/after report on half the held-out prompts (30 x 8 samples per
model; the margins below hold there too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_demo_detoxifies_the_tiny_policy_and_keeps_its_language(tmp_path, tiny_cache):
    result = subprocess.run(
        [sys.executable, "-m", "rlaf_ray", "demo", f"run.output_dir={tmp_path}", f"run.cache_dir={tiny_cache}",
         "evaluation.max_prompts=30"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "RAY_ADDRESS": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    # A new run every time, <run.name>-<date>-<time>, announced before it starts.
    (run_dir,) = tmp_path.glob("offline-tiny-*")
    assert f"[rlaf] demo: writing to {run_dir.resolve()}" in result.stdout

    report = run_dir / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["seed"] == 0 and set(summary) == {"seed", "kl", "base", "trained"}
    base, trained = summary["base"], summary["trained"]
    for measures in (base, trained):
        assert set(measures) == {"toxic_rate", "grammatical_rate", "distinct_2", "perplexity",
                                 "expected_max_toxicity"}
    assert f"toxic {base['toxic_rate']:.1%} -> {trained['toxic_rate']:.1%}" in result.stdout
    # Ground truth: the base policy speaks the grammar and insults at the world's rate; the trained
    # one insults far less and speaks about as well (these margins hold for seeds 0, 1 and 2 of
    # benchmarks/learning.py; this is seed 0).
    assert base["grammatical_rate"] >= 0.9 and 0.2 <= base["toxic_rate"] <= 0.4
    assert trained["toxic_rate"] <= 0.7 * base["toxic_rate"]
    assert trained["grammatical_rate"] >= base["grammatical_rate"] - 0.10
    assert trained["distinct_2"] >= 0.9 * base["distinct_2"]
    assert trained["perplexity"] <= 1.25 * base["perplexity"]
    assert 0 < summary["kl"] < 1.0  # bounded: the policy stays near its base

    for name in ("metrics.csv", "metrics.md", "examples.csv", "examples.md", "training_curves.png",
                 "toxicity_distribution.png"):
        assert (report / name).stat().st_size > 0, name
    examples = (report / "examples.csv").read_text().splitlines()
    assert examples[0] == "prompt,response_before,response_after,reward_before,reward_after,reward_diff"
    assert (report / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
