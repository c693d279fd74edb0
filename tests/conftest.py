"""Shared fixtures: offline environment, tiny models built once per session, one Ray per module."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Ray workers inherit this: they can import the test rewards in ``tests.rewards``.
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
sys.path.insert(0, str(REPO))

DATA = REPO / "jobs" / "data"
SAMPLE_DATA = DATA / "dialogsum_sample.jsonl"


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def policy_path(tiny_cache) -> str:
    from rlaf_ray.models.tiny import resolve_model

    return resolve_model("tiny:llama", tiny_cache)


@pytest.fixture(scope="session")
def classifier_path(tiny_cache) -> str:
    from rlaf_ray.models.tiny import resolve_model

    return resolve_model("tiny:roberta-classifier", tiny_cache)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()


def base_config(policy_path: str, classifier_path: str, tmp_path: Path, **sections) -> dict:
    """A small, fast configuration dict for tests; ``sections`` update whole sections."""
    config = {
        "model": {"name_or_path": policy_path, "max_prompt_length": 128},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "o_proj"]},
        "generation": {"max_new_tokens": 10},
        "reward": {"model_name_or_path": classifier_path},
        "data": {"path": str(SAMPLE_DATA), "min_chars": 200, "max_chars": 1000, "num_cpus_per_task": 0.25},
        "ppo": {"num_iterations": 2, "batch_size": 8, "num_minibatches": 2, "ppo_epochs": 2,
                "learning_rate": 3e-3, "kl_coef": 0.05},
        "resources": {"learner": {"num_workers": 2, "num_cpus": 0.5},
                      "rollout": {"num_workers": 1, "num_cpus": 0.25},
                      "reward": {"num_workers": 1, "num_cpus": 0.25}},
        "evaluation": {"after_train": False},
        "run": {"name": "test", "output_dir": str(tmp_path / "results"), "checkpoint_every": 2,
                "cache_dir": str(tmp_path / "cache")},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config
