"""cluster.yaml against the launcher's schema and what a real account needs; the KubeRay RayJob
and the image they run; which roles fit which nodes (no Ray)."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from rlaf_ray.config import from_dict, load_config
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


def test_cluster_yaml_is_fit_for_a_real_account():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    text = yaml.safe_dump(config)  # the settings, not the comments
    assert "0.0.0.0/0" not in text  # SSH only through the user's own security group
    for name, node in config["available_node_types"].items():
        node_config = node["node_config"]
        # a current GPU host image on every node (Ray's default AMI predates CUDA 12 drivers)
        assert node_config["ImageId"].startswith("resolve:ssm:/aws/service/deeplearning/ami/"), name
        assert node_config["SecurityGroupIds"] and node_config["IamInstanceProfile"]["Arn"], name
    assert not config["available_node_types"][config["head_node_type"]]["resources"].get("GPU")
    # dependencies are in the image, not installed at each boot
    assert config["setup_commands"] == [] and "pip install" not in text
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = " ".join(commands)
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN" in start
        assert "|| true" not in start and start.count("exit 1") == 2  # a secret not read stops the node
        assert "RAY_TRAIN_ENABLE_STATE_TRACKING=1" in start


def test_the_image_pins_the_ray_of_the_constraints():
    dockerfile = (REPO / "jobs" / "docker" / "Dockerfile").read_text()
    pinned = re.search(r"^ray==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    assert re.search(r"^FROM rayproject/ray:(\S+)-py311-gpu$", dockerfile, re.M).group(1) == pinned
    assert "-c constraints.txt" in dockerfile


def test_kuberay_rayjob_runs_a_valid_train_command():
    job = yaml.safe_load((REPO / "jobs" / "kuberay" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token" and cluster["enableInTreeAutoscaling"] is True
    pinned = re.search(r"^ray==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    assert cluster["rayVersion"] == pinned

    # The entrypoint: the image's copy of a config in this repository, valid with its overrides,
    # and results that outlive the pods (a URI).
    words = shlex.split(spec["entrypoint"])
    assert words[:4] == ["python", "-m", "rlaf_ray", "train"]
    config_path = words[words.index("--config") + 1]
    assert config_path.startswith("/home/ray/rlaf_ray/")
    overrides = [w for w in words[words.index("--config") + 2:] if "=" in w]
    cfg = load_config(REPO / config_path.removeprefix("/home/ray/rlaf_ray/"), overrides)
    assert cfg.run.output_dir.startswith(("s3://", "gs://"))

    head = cluster["headGroupSpec"]
    head_container = head["template"]["spec"]["containers"][0]
    # the same image as cluster.yaml's nodes, on every pod
    image = yaml.safe_load((REPO / "cluster.yaml").read_text())["docker"]["image"]
    pods = [head] + cluster["workerGroupSpecs"]
    assert {pod["template"]["spec"]["containers"][0]["image"] for pod in pods} == {image}
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"] and head["rayStartParams"]["num-gpus"] == "0"
    offered = set()
    for group in cluster["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert group["minReplicas"] == 0  # scaled on demand
        offered |= set(yaml.safe_load(yaml.safe_load(group["rayStartParams"]["resources"])))
        tokens = [e for e in container["env"] if e["name"] == "HF_TOKEN"]
        assert tokens and "value" not in tokens[0] and tokens[0]["valueFrom"]["secretKeyRef"]
    pinned_resources = {k for role in ("learner", "rollout", "reward")
                        for k in getattr(cfg.resources, role).resources}
    assert pinned_resources and pinned_resources <= offered


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
