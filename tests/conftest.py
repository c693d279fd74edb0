"""Shared fixtures: offline environment, tiny models built once per session, one Ray per session.

The lanes are the folders: ``unit`` (no Ray, no model building; seconds), ``models`` (tiny models,
no Ray), ``ray`` (roles, data and placement on a local Ray), ``e2e`` (whole runs). Each test is
marked with its lane, so ``-m unit`` and ``tests/unit`` select the same tests.
"""

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
# The world the tiny policy speaks: its dialogues, all of them usable as prompts.
WORLD_DATA = {"source": "files", "path": str(DATA / "detox_world" / "{split}.jsonl"), "text_column": "text",
              "min_chars": 0, "max_chars": None}


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-cache")


WORLD_MODELS = ("tiny:llama", "tiny:roberta-classifier", "tiny:judge-lm")


@pytest.fixture(scope="session")
def world_models(tiny_cache) -> dict[str, str]:
    """The world's policy, classifier and judge LM, built side by side on first use."""
    from rlaf_ray.models.tiny import resolve_models

    return dict(zip(WORLD_MODELS, resolve_models(list(WORLD_MODELS), tiny_cache)))


@pytest.fixture(scope="session")
def policy_path(world_models) -> str:
    return world_models["tiny:llama"]


@pytest.fixture(scope="session")
def classifier_path(world_models) -> str:
    return world_models["tiny:roberta-classifier"]


@pytest.fixture(scope="session")
def judge_path(world_models) -> str:
    return world_models["tiny:judge-lm"]


LANES = ("unit", "models", "ray", "e2e")


def pytest_collection_modifyitems(items):
    """Mark each test with its lane, and run the lanes from the fastest (a broken unit fails in
    seconds); within a lane, the modules that need Ray to themselves (``no_ray``) come last, so
    that the session's Ray starts once per lane instead of again after each of them."""
    lanes = {item: Path(str(item.fspath)).relative_to(REPO / "tests").parts[0] for item in items}
    for item, lane in lanes.items():
        if lane in LANES:
            item.add_marker(lane)
    own_ray = {item.module.__name__ for item in items if "no_ray" in item.fixturenames}
    # sort is stable: collection order within each (lane, own Ray) group
    items.sort(key=lambda item: (LANES.index(lanes[item]) if lanes[item] in LANES else len(LANES),
                                 item.module.__name__ in own_ray))


@pytest.fixture(scope="module")
def ray_local():
    """The session's local Ray instance, started on first use and kept for the next modules. A
    module whose tests need Ray to themselves (another cluster, ``ray job submit``) shuts it down
    (``no_ray``); the next module that uses it starts it again."""
    import ray

    from rlaf_ray.console import WORKER_SETUP_HOOK

    if not ray.is_initialized():
        # Workers start as a run's do (rlaf_ray.console.init_ray): only the actors that load a
        # quantized policy import bitsandbytes.
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True,
                 runtime_env={"worker_process_setup_hook": WORKER_SETUP_HOOK})
    yield ray


@pytest.fixture
def no_ray():
    import ray

    ray.shutdown()
    yield


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_exit():
    yield
    import ray

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
        # No learner-group restart: a test whose learner fails should fail at once (the fault test
        # turns restarts on).
        "run": {"name": "test", "output_dir": str(tmp_path / "results"), "checkpoint_every": 2,
                "cache_dir": str(tmp_path / "cache"), "max_failures": 0},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


# Names that validate as configuration but are never built: for tests that stop before any model loads.
UNBUILT_POLICY, UNBUILT_CLASSIFIER = "tiny:llama", "tiny:roberta-classifier"

# The Tune search the tune tests share: lora.r as a grid started in order, a few iterations each.
RANKS = [16, 8, 4]
ITERATIONS = 4


def search_config(policy_path: str, classifier_path: str, tmp_path: Path, **tune) -> dict:
    # Fractional CPUs: one trial holds 0.5 (driver 0.05, rollout, reward and learner 0.15 each),
    # so two fit on 2 CPUs beside the CPU Ray Data's tasks may need.
    config = base_config(
        policy_path, classifier_path, tmp_path,
        reward={"callable": "tests.rewards:prefers_questions"},
        generation={"max_new_tokens": 6},
        data={"shuffle": False},  # no sort: a faster prompt pipeline
        ppo={"num_iterations": ITERATIONS, "batch_size": 4, "num_minibatches": 1, "ppo_epochs": 1},
        resources={"learner": {"num_workers": 1, "num_cpus": 0.15},
                   "rollout": {"num_workers": 1, "num_cpus": 0.15},
                   "reward": {"num_workers": 1, "num_cpus": 0.15}},
        run={"name": "search", "checkpoint_every": 1},
    )
    config["tune"] = {
        "search_space": {"lora.r": {"grid": RANKS}, "ppo.learning_rate": {"loguniform": [1e-4, 1e-2]}},
        "num_samples": 1, "metric": "params/trainable", "mode": "max",
        "grace_period": 1, "reduction_factor": 2, "driver_num_cpus": 0.05, **tune,
    }
    return config


def trained_adapter(policy_path, directory, target_modules=("q_proj", "v_proj")) -> str:
    """A LoRA adapter with non-zero weights (B starts at zero: perturb it so merging matters);
    ``target_modules`` None: peft's default for the architecture."""
    import torch

    from rlaf_ray.config import LoraSettings, ModelSettings
    from rlaf_ray.models.policy import load_policy

    torch.manual_seed(0)
    targets = None if target_modules is None else list(target_modules)
    policy = load_policy(ModelSettings(name_or_path=policy_path), LoraSettings(target_modules=targets))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    policy.save_pretrained(directory)
    return str(directory)
