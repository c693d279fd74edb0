"""Checks before any actor starts that need the models: LoRA targets, data files."""

import subprocess
import sys

import pytest

from rlaf_ray.config import ConfigError, from_dict
from tests.conftest import REPO, base_config

REPO_CONFIG = str(REPO / "jobs" / "configs" / "offline_tiny.yaml")


def test_cli_data_errors_before_actors(tmp_path):
    # A fresh cache: the data error comes before any tiny model is built.
    result = subprocess.run(
        [sys.executable, "-m", "rlaf_ray", "train", "--config", REPO_CONFIG,
         f"data.path={tmp_path}/missing.jsonl", f"run.cache_dir={tmp_path}/cache"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert f"rlaf-ray: error: data.path '{tmp_path}/missing.jsonl': file not found" in result.stderr
    assert "Started a local Ray instance" not in result.stdout + result.stderr
    assert not (tmp_path / "cache").exists()


def test_unknown_lora_target_module_names_the_linear_layers(policy_path, classifier_path, tmp_path):
    from rlaf_ray.preflight import prepare
    config = base_config(policy_path, classifier_path, tmp_path, lora={"target_modules": ["q_proj", "qkv_proj"]})
    with pytest.raises(ConfigError) as err:
        prepare(from_dict(config))
    assert str(err.value) == (f"lora.target_modules: 'qkv_proj' is not a linear layer of '{policy_path}'; its linear "
                              "layers: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj")
