"""How a run's processes start: bitsandbytes is importable only in the workers started to load a
quantized policy (``rlaf_ray.worker_setup``, the session's Ray has the runs' setup hook), and Ray
Train's controller settings hold for one ``fit``, a user's own values winning."""

from __future__ import annotations

import importlib.util
import os

import ray

from rlaf_ray.config import ModelSettings
from rlaf_ray.controller_settings import controller_settings
from rlaf_ray.evaluation.meter import loads
from rlaf_ray.worker_setup import QUANTIZED_ENV, policy_runtime_env

FLOAT, QUANTIZED = ModelSettings(name_or_path="any"), ModelSettings(name_or_path="any", dtype="4bit")


@ray.remote(num_cpus=0)
def finds_bitsandbytes() -> bool:
    # how peft and transformers ask whether it is installed
    return importlib.util.find_spec("bitsandbytes") is not None


def test_only_workers_of_a_quantized_policy_find_bitsandbytes(ray_local):
    assert policy_runtime_env(FLOAT, deterministic=False) == {} and loads(FLOAT) == {}
    quantized = policy_runtime_env(QUANTIZED, deterministic=False)
    assert loads(QUANTIZED) == {"runtime_env": quantized}
    assert set(policy_runtime_env(QUANTIZED, deterministic=True)["env_vars"]) == {QUANTIZED_ENV,
                                                                                  "CUBLAS_WORKSPACE_CONFIG"}
    assert importlib.util.find_spec("bitsandbytes") is not None  # installed here
    assert ray.get(finds_bitsandbytes.remote()) is False
    assert ray.get(finds_bitsandbytes.options(runtime_env=quantized).remote()) is True


def test_controller_settings_hold_for_the_fit_and_yield_to_the_user(ray_local, monkeypatch):
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", raising=False)
    with controller_settings():
        assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"  # the user's
        assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"  # one node: nothing to preempt
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ
    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")
    with controller_settings():
        assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.5"
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in os.environ
