"""``run.deterministic`` reaches the processes that generate: the cuBLAS variable in their
environment from the start (Ray's runtime_env), deterministic algorithms on, no cuDNN autotuning."""

from __future__ import annotations

import os

import ray

from rlaf_ray.config import RoleResources
from rlaf_ray.determinism import deterministic_runtime_env, use_deterministic_algorithms
from rlaf_ray.train import actor_options


@ray.remote
class Probe:
    def __init__(self, deterministic: bool):
        self.env_at_start = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        use_deterministic_algorithms(deterministic)

    def state(self) -> tuple:
        import torch

        return self.env_at_start, torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark


def test_deterministic_actors_start_with_the_environment_and_the_mode(ray_local):
    res = RoleResources(num_cpus=0.1)
    on = Probe.options(**actor_options(res, "probe-on", runtime_env=deterministic_runtime_env(True))).remote(True)
    off = Probe.options(**actor_options(res, "probe-off", runtime_env=deterministic_runtime_env(False))).remote(False)
    try:
        assert ray.get(on.state.remote()) == (":4096:8", True, False)
        assert ray.get(off.state.remote())[1] is False
    finally:
        ray.kill(on)
        ray.kill(off)
