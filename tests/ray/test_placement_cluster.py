"""A simulated two-node cluster (ray.cluster_utils.Cluster) with custom resources: rollout and
reward actors land on the inference node, learners on the training node, as the config names."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import ray.train
from ray.train.torch import TorchTrainer

from rlaf_ray.config import from_dict
from rlaf_ray.placement import ensure_shared_output, placement_problems
from tests.conftest import base_config


def learner_nodes(config: dict) -> None:
    ctx = ray.train.get_context()
    Path(config["out"], f"rank{ctx.get_world_rank()}").write_text(ray.get_runtime_context().get_node_id())


@pytest.fixture
def two_node_cluster(no_ray):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        train_node = cluster.add_node(num_cpus=2, resources={"train_node": 1})
        infer_node = cluster.add_node(num_cpus=2, resources={"inference_node": 1})
        ray.init(address=cluster.address)
        yield {"train": train_node.node_id, "infer": infer_node.node_id}
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_roles_land_on_the_nodes_the_config_names(two_node_cluster, policy_path, classifier_path, tmp_path):
    from rlaf_ray.placement import scaling_config
    from rlaf_ray.train import start_roles, stop_roles

    pin_infer = {"num_workers": 1, "num_cpus": 0.5, "resources": {"inference_node": 0.01}}
    cfg = from_dict(base_config(policy_path, classifier_path, tmp_path, resources={
        "learner": {"num_workers": 2, "num_cpus": 0.5, "resources": {"train_node": 0.01}},
        "rollout": pin_infer, "reward": pin_infer}))
    assert placement_problems(cfg, [dict(n["Resources"]) for n in ray.nodes() if n["Alive"]]) == []
    ensure_shared_output(str(tmp_path / "results"))  # one machine: every node sees it

    roles = start_roles(cfg)
    try:
        where = ray.get(roles.starting)
        assert {w["node_id"] for w in where} == {two_node_cluster["infer"]}
    finally:
        stop_roles(roles)

    out = tmp_path / "learners"
    out.mkdir()
    TorchTrainer(learner_nodes, train_loop_config={"out": str(out)},
                 scaling_config=scaling_config(cfg.resources.learner),
                 run_config=ray.train.RunConfig(name="placement", storage_path=str(tmp_path / "results"))).fit()
    assert {(out / f"rank{r}").read_text() for r in range(2)} == {two_node_cluster["train"]}
