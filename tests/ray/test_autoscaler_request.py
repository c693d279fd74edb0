"""Ray's fake autoscaling cluster (a real autoscaler adding real raylets as nodes): before any
actor exists, a run asks the autoscaler for its roles' bundles, waits for the node, and releases
the request; a cluster that cannot provide them is one line after run.resource_wait_s."""

from __future__ import annotations

import pytest
import ray

from rlaf_ray.config import ConfigError, from_dict
from rlaf_ray.placement import ensure_placement, release_request, role_bundles
from tests.conftest import UNBUILT_CLASSIFIER, UNBUILT_POLICY, base_config


@pytest.fixture
def autoscaling_cluster(no_ray):
    from ray.cluster_utils import AutoscalingCluster

    # A head that hosts nothing (as in cluster.yaml) and one node type the autoscaler may add.
    cluster = AutoscalingCluster(
        head_resources={"CPU": 0},
        worker_node_types={"train": {"resources": {"CPU": 2, "train_node": 1}, "node_config": {},
                                     "min_workers": 0, "max_workers": 1}},
        idle_timeout_minutes=10)
    cluster.start()
    ray.init("auto")
    try:
        yield
    finally:
        ray.shutdown()
        cluster.shutdown()


def alive() -> list[dict]:
    return [n["Resources"] for n in ray.nodes() if n["Alive"]]


@pytest.mark.slow
def test_the_run_asks_the_autoscaler_for_its_roles_and_waits(autoscaling_cluster, tmp_path):
    pinned = {"num_workers": 2, "num_cpus": 0.5, "resources": {"train_node": 0.01}}
    cfg = from_dict(base_config(UNBUILT_POLICY, UNBUILT_CLASSIFIER, tmp_path, resources={"learner": pinned},
                                run={"resource_wait_s": 120}))
    assert role_bundles(cfg) == [{"CPU": 0.5, "train_node": 0.01}] * 2 + [{"CPU": 0.25}] * 2
    assert len(alive()) == 1  # the head only: nothing is pending, so nothing would scale on its own
    try:
        assert ensure_placement(cfg) is True
    finally:
        release_request()
    assert any(node.get("train_node") for node in alive())

    # What no node type offers: one line after the wait, naming the role and the wait.
    tpu = from_dict(base_config(UNBUILT_POLICY, UNBUILT_CLASSIFIER, tmp_path,
                                resources={"reward": {"num_cpus": 0.25, "resources": {"tpu_node": 1}}},
                                run={"resource_wait_s": 2}))
    with pytest.raises(ConfigError, match=r"^resources.reward: no node can host one reward worker .*"
                                          r"\(waited run.resource_wait_s=2 s for the autoscaler\)$"):
        ensure_placement(tpu)
