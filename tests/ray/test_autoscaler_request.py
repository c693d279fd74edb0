"""Ray's fake multi-node provider (a real autoscaler adding real raylets as nodes): before any
actor exists, a run asks the autoscaler for its roles' bundles and waits for the node that hosts
them; a cluster that cannot provide them ends the run in one line after run.resource_wait_s."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import ray

from rlaf_ray.config import ConfigError, from_dict
from rlaf_ray.placement import placed, role_bundles
from tests.conftest import base_config


def fake_cluster_config(worker_types: dict) -> dict:
    """A launcher config for Ray's fake multi-node provider (``fake_multinode``: the autoscaler
    starts real raylets on this machine as its nodes). Written here: the wheel does not ship the
    example file ``ray.cluster_utils.AutoscalingCluster`` reads."""
    return {
        "cluster_name": "rlaf-fake", "max_workers": sum(t["max_workers"] for t in worker_types.values()),
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        # A head that hosts nothing (as in cluster.yaml).
        "available_node_types": {"ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                                 **worker_types},
        "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 10,
        "docker": {}, "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [],
    }


@pytest.fixture
def autoscaling_cluster(no_ray, tmp_path):
    config = tmp_path / "autoscaling.json"
    config.write_text(json.dumps(fake_cluster_config({"train": {
        "resources": {"CPU": 2, "train_node": 1}, "node_config": {}, "min_workers": 0, "max_workers": 1}})))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_FAKE_CLUSTER="1")
    subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
    subprocess.run(["ray", "start", "--head", f"--autoscaling-config={config}", "--num-cpus=0",
                    "--include-dashboard=false", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=180)
    ray.init("auto")
    try:
        yield
    finally:
        ray.shutdown()
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)


def alive() -> list[dict]:
    return [n["Resources"] for n in ray.nodes() if n["Alive"]]


@pytest.mark.slow
def test_a_run_asks_the_autoscaler_for_its_roles_before_any_actor(autoscaling_cluster, policy_path, classifier_path,
                                                                  tmp_path):
    from ray.util.placement_group import placement_group, remove_placement_group

    from rlaf_ray.train import train

    pinned = {"num_workers": 1, "num_cpus": 0.5, "resources": {"train_node": 0.01}}
    cfg = from_dict(base_config(policy_path, classifier_path, tmp_path, resources={"learner": pinned},
                                run={"resource_wait_s": 120}))
    assert role_bundles(cfg) == [{"CPU": 0.5, "train_node": 0.01}] + [{"CPU": 0.25}] * 2
    assert len(alive()) == 1  # the head only: nothing is pending, so nothing would scale on its own
    # What train() does before it starts any actor (a run's roles starting on the node that came
    # up is what the placement test shows on a fixed cluster).
    with placed(cfg):  # asks for the bundles and waits for the node
        assert any(node.get("train_node") for node in alive())
        group = placement_group(role_bundles(cfg))  # the roles' bundles fit now, all at once
        assert group.wait(timeout_seconds=60)
        remove_placement_group(group)

    # What no node type offers: the run ends in one line after the wait, naming the role and the
    # wait, and no actor of it was started.
    tpu = from_dict(base_config(policy_path, classifier_path, tmp_path,
                                resources={"reward": {"num_cpus": 0.25, "resources": {"tpu_node": 1}}},
                                run={"name": "tpu", "resource_wait_s": 2}))
    with pytest.raises(ConfigError, match=r"^resources.reward: no node can host one reward worker .*"
                                          r"\(waited run.resource_wait_s=2 s for the autoscaler\)$"):
        train(tpu)
    assert not [name for name in ray.util.list_named_actors() if name.startswith("rlaf:")]
