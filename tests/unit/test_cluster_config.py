"""cluster.yaml against the launcher's schema; which roles fit which nodes (no Ray)."""

from __future__ import annotations

import pytest
import yaml

from rlaf_ray.config import from_dict
from rlaf_ray.placement import placement_problems
from tests.conftest import REPO, UNBUILT_CLASSIFIER, UNBUILT_POLICY, base_config


def test_cluster_yaml_validates_against_the_launcher_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    # The node types carry the custom resources the cluster example config pins roles to.
    example = yaml.safe_load((REPO / "jobs" / "configs" / "tinyllama_dialogsum_cluster.yaml").read_text())
    offered = {k for t in config["available_node_types"].values() for k in t["resources"]}
    pinned = {k for role in example["resources"].values() for k in role.get("resources", {})}
    assert pinned and pinned <= offered
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])

    config["available_node_types"]["gpu_train"]["min_workerz"] = 1
    with pytest.raises(Exception, match="min_workerz"):
        validate_config(prepare_config(config))


def test_placement_problems_name_the_role_and_resources(tmp_path):
    cfg = from_dict(base_config(UNBUILT_POLICY, UNBUILT_CLASSIFIER, tmp_path,
                                resources={"rollout": {"num_workers": 1, "num_cpus": 1, "num_gpus": 1,
                                                       "resources": {"inference_node": 0.01}}}))
    nodes = [{"CPU": 2.0, "memory": 1e9, "node:127.0.0.1": 1.0}]
    assert placement_problems(cfg, nodes) == [
        "resources.rollout: no node can host one rollout worker with {CPU: 1, GPU: 1, inference_node: 0.01}; "
        "the nodes offer {CPU: 2}"]
    fits_each_but_not_all = from_dict(base_config(UNBUILT_POLICY, UNBUILT_CLASSIFIER, tmp_path,
                                                  resources={"learner": {"num_workers": 2, "num_cpus": 1.5}}))
    assert placement_problems(fits_each_but_not_all, nodes) == [
        "resources: the roles need {CPU: 3.5} in total, more than the cluster's {CPU: 2}"]
    assert placement_problems(from_dict(base_config(UNBUILT_POLICY, UNBUILT_CLASSIFIER, tmp_path)), nodes) == []
