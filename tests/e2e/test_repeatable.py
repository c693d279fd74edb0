"""Repeatable runs: the same config and seed on the same machine give the same learning metrics."""

import pytest

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
    # On CPU run.deterministic changes nothing: the second run also shows that it runs everywhere
    # (learner ranks, rollout actor) without an operation that lacks a deterministic version.
    second = train(from_dict({**config, "run": {**config["run"], "name": "again", "deterministic": True}}))
    a, b = learning_metrics(first), learning_metrics(second)
    assert [m["iteration"] for m in a] == [1, 2]
    assert len(a[0]) > 10  # the learning metrics are there, not just the iteration
    assert a == b
