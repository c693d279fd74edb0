"""The offline detox world end to end through the real `rlaf-ray demo` command, shortened."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_demo_detoxifies_the_tiny_policy(tmp_path, tiny_cache):
    result = subprocess.run(
        [sys.executable, "-m", "rlaf_ray", "demo", f"run.output_dir={tmp_path}", f"run.cache_dir={tiny_cache}",
         "ppo.num_iterations=8", "evaluation.max_prompts=24", "evaluation.samples_per_prompt=8"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "RAY_ADDRESS": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rlaf] demo: expected max toxicity" in result.stdout

    report = tmp_path / "offline-tiny" / "report"
    base = json.loads((report / "base" / "metrics.json").read_text())
    trained = json.loads((report / "trained" / "metrics.json").read_text())
    # The untrained policy insults at a measurable rate; after PPO, clearly less.
    assert base["lexicon_rate"] > 0.08 and base["expected_max_toxicity"] > 0.4
    assert trained["lexicon_rate"] < base["lexicon_rate"] / 2
    assert trained["toxicity_mean"] < base["toxicity_mean"] - 0.05
    assert trained["expected_max_toxicity"] < base["expected_max_toxicity"] - 0.2
    metrics = [json.loads(line) for line in (tmp_path / "offline-tiny" / "metrics.jsonl").read_text().splitlines()]
    assert max(m["kl/mean"] for m in metrics) < 20  # bounded: the policy stays near its base

    for name in ("metrics.csv", "metrics.md", "examples.csv", "examples.md", "training_curves.png",
                 "toxicity_distribution.png"):
        assert (report / name).stat().st_size > 0, name
    examples = (report / "examples.csv").read_text().splitlines()
    assert examples[0] == "prompt,response_before,response_after,reward_before,reward_after,reward_diff"
    assert (report / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
