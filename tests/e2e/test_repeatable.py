"""Repeatable runs: the same config and seed on the same machine give the same learning metrics.
The first run is also the offline default's shape end to end: the RoBERTa classifier as the reward
actor, 2 learner ranks."""

import pytest
import torch

from rlaf_ray.config import from_dict
from rlaf_ray.run_log import read_metrics
from rlaf_ray.train import train
from tests.conftest import base_config

# Wall-clock and memory readings differ between runs by nature; everything else must not.
VARYING_PREFIXES = ("time/", "perf/", "memory/")


def learning_metrics(run_dir) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.startswith(VARYING_PREFIXES)} for m in read_metrics(run_dir)]


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(ray_local, policy_path, classifier_path, tmp_path):
    config = base_config(policy_path, classifier_path, tmp_path, generation={"max_new_tokens": [6, 10]})
    first = train(from_dict(config))
    metrics = read_metrics(first)
    assert [m["iteration"] for m in metrics] == [1, 2]
    # raw nothate logits of the tiny classifier: well away from 0 (about -3 to +3)
    assert all(abs(m["reward/mean"]) > 0.5 and m["reward/non_finite"] == 0 for m in metrics)
    # resident memory of the processes (no GPU here): a tiny model still needs its runtime
    assert all(100 < m[f"memory/{role}_peak_mib"] < 20_000 for m in metrics
               for role in ("learner", "rollout", "reward"))
    state = torch.load(first / "checkpoint_000002" / "learner.pt", weights_only=True)
    assert set(state) == {"optimizer", "kl_ctl", "generator", "reward_stats"}

    # On CPU run.deterministic changes nothing: the second run also shows that it runs everywhere
    # (learner ranks, rollout actor) without an operation that lacks a deterministic version.
    second = train(from_dict({**config, "run": {**config["run"], "name": "again", "deterministic": True}}))
    a, b = learning_metrics(first), learning_metrics(second)
    assert len(a[0]) > 10  # the learning metrics are there, not just the iteration
    assert a == b
