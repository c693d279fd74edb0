"""Configuration: YAML + overrides, one clear line per problem, errors before anything starts."""

import json
import subprocess
import sys

import pytest
import yaml

import rlaf_ray
from rlaf_ray.config import (
    ConfigError,
    PPOSettings,
    RLAFConfig,
    from_dict,
    load_config,
    parse_overrides,
)
from tests.conftest import REPO

REPO_CONFIG = str(REPO / "jobs" / "configs" / "offline_tiny.yaml")


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    return err.value.problems


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ppo:\n  batch_size: 8\n  num_minibatches: 2\nlora:\n  r: 4\n")
    cfg = load_config(path, ["lora.r=16", "generation.max_new_tokens=[4,9]", "ppo.adaptive_kl=true",
                             "lora.target_modules=[q_proj,v_proj]", "reward.callable=null",
                             "ppo.learning_rate=4e-3"])
    assert isinstance(cfg, RLAFConfig)
    assert cfg.ppo.batch_size == 8 and cfg.lora.r == 16
    assert cfg.generation.max_new_tokens == [4, 9]
    assert cfg.ppo.adaptive_kl is True
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.reward.callable is None
    assert cfg.ppo.learning_rate == 4e-3  # YAML reads 4e-3 as a string; still a number here


def test_parse_overrides_nested_and_bad():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        parse_overrides(["nokey"])


def test_unknown_key_names_valid_keys_near_it():
    (line,) = problems({"ppo": {"learning_rat": 1e-4}})
    assert line.startswith("ppo.learning_rat: unknown key")
    assert "did you mean learning_rate?" in line
    assert "cliprange" in line  # lists the valid keys of the section


def test_unknown_section():
    (line,) = problems({"optim": {}})
    assert line.startswith("optim: unknown key") and "valid keys in the top level" in line


def test_bad_values_name_field_and_range():
    lines = problems({"ppo": {"cliprange": 1.5, "gamma": -0.1}, "generation": {"top_p": 0},
                      "lora": {"r": 0}, "run": {"max_failures": -1}})
    assert any(l.startswith("ppo.cliprange: 1.5 is out of range; allowed (0.0, 1.0]") for l in lines)
    assert any(l.startswith("ppo.gamma: -0.1 is out of range") for l in lines)
    assert any(l.startswith("generation.top_p: 0") for l in lines)
    assert any(l.startswith("lora.r: 0 is out of range; allowed [1, inf]") for l in lines)
    assert any(l.startswith("run.max_failures: -1 is out of range; allowed [0, inf]") for l in lines)
    assert len(lines) == 5  # one line per problem


def test_bad_types_and_choices():
    lines = problems({"ppo": {"batch_size": "big"}, "model": {"dtype": "fp8"}})
    assert "ppo.batch_size: expected an integer, got 'big'" in lines
    assert any(l.startswith("model.dtype: expected one of 'fp32' | 'bf16' | 'fp16'") for l in lines)


def test_batch_must_divide_across_learners_and_minibatches():
    (line,) = problems({"ppo": {"batch_size": 10}, "resources": {"learner": {"num_workers": 4}}})
    assert line == ("ppo.batch_size: 10 responses do not divide across resources.learner.num_workers=4 "
                    "learners in whole groups of ppo.samples_per_prompt=1")
    (line,) = problems({"ppo": {"batch_size": 12, "num_minibatches": 4},
                        "resources": {"learner": {"num_workers": 2}}})
    assert "6 responses per learner (12/2) do not divide into ppo.num_minibatches=4" in line
    # a prompt's group stays on one learner
    (line,) = problems({"ppo": {"batch_size": 12, "samples_per_prompt": 4, "estimator": "rloo"},
                        "resources": {"learner": {"num_workers": 2}}})
    assert line.startswith("ppo.batch_size: 12 responses do not divide across resources.learner.num_workers=2")


def test_critic_free_estimators_need_groups():
    (line,) = problems({"ppo": {"estimator": "grpo"}})
    assert line.startswith("ppo.samples_per_prompt: grpo compares responses to the same prompt; set "
                           "samples_per_prompt to 2 or more (got 1)")


def test_max_new_tokens_range_and_callable():
    lines = problems({"generation": {"max_new_tokens": [9, 3]},
                      "reward": {"callable": "no_such_module_xyz:f"}})
    assert any(l.startswith("generation.max_new_tokens: expected an integer or [low, high]") for l in lines)
    assert any(l.startswith("reward.callable: cannot import module 'no_such_module_xyz'") for l in lines)


def test_shipped_configs_are_valid():
    paths = sorted((REPO / "jobs" / "configs").glob("*.yaml"))
    assert len(paths) >= 5
    for path in paths:
        load_config(path)


def test_cli_reports_every_problem_before_starting_ray(tmp_path):
    """The CLI exits 2 with one line per problem; no Ray session is created."""
    result = subprocess.run(
        [sys.executable, "-m", "rlaf_ray", "train", "--config", REPO_CONFIG, "ppo.batch_size=7",
         "ppo.cliprange=2", f"run.output_dir={tmp_path}/out"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    errors = [l for l in result.stderr.splitlines() if l.startswith("rlaf-ray: error:")]
    assert len(errors) == 2
    assert any("ppo.batch_size: 7 responses do not divide" in l for l in errors)
    assert any("ppo.cliprange: 2" in l for l in errors)
    assert not (tmp_path / "out").exists()


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "rlaf_ray", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout
    out = subprocess.run([sys.executable, "-m", "rlaf_ray", "train", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "--config" in out.stdout and "key=value" in out.stdout


def rlaf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaf_ray", *args], capture_output=True, text=True, timeout=60)


def test_config_schema_describes_every_field_and_its_bounds():
    result = rlaf("config", "--schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) == set(RLAFConfig.model_fields)
    ppo = schema["$defs"]["PPOSettings"]
    assert ppo["additionalProperties"] is False  # editors flag unknown keys too
    cliprange = ppo["properties"]["cliprange"]
    assert (cliprange["exclusiveMinimum"], cliprange["maximum"]) == (0.0, 1.0)
    # Every field of every section documents itself.
    undocumented = [f"{name}.{field}" for name, section in schema["$defs"].items()
                    for field, spec in section["properties"].items() if not spec.get("description")]
    assert undocumented == []


def test_config_show_prints_the_validated_defaulted_config(tmp_path):
    result = rlaf("config", "--show", REPO_CONFIG, "ppo.seed=7", "lora.r=4")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["ppo"]["seed"] == 7 and shown["lora"]["r"] == 4
    assert shown["model"]["name_or_path"] == "tiny:llama"  # from the file
    assert shown["ppo"]["cliprange"] == 0.2  # a default the file does not set
    # What it prints is a complete config that loads back to the same values.
    path = tmp_path / "shown.yaml"
    path.write_text(result.stdout)
    assert load_config(path) == load_config(REPO_CONFIG, ["ppo.seed=7", "lora.r=4"])

    bad = rlaf("config", "--show", REPO_CONFIG, "ppo.learnig_rate=1")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "rlaf-ray: error: ppo.learnig_rate: unknown key; did you mean learning_rate? valid keys in ppo: "
        + ", ".join(PPOSettings.model_fields)]


def test_version():
    result = rlaf("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"rlaf-ray {rlaf_ray.__version__}"


def test_kl_estimator_must_fit_where_the_kl_goes():
    (line,) = problems({"ppo": {"kl_estimator": "k3"}})  # kl_in defaults to reward
    assert line.startswith("ppo.kl_estimator: 'k3' belongs in the loss (ppo.kl_in=loss)")
    (line,) = problems({"ppo": {"kl_estimator": "k2", "kl_in": "loss"}})
    assert line == "ppo.kl_estimator: expected one of 'k1' | 'k3' | 'full', got 'k2'"
    cfg = from_dict({"ppo": {"kl_estimator": "k3", "kl_in": "loss"}})
    assert (cfg.ppo.kl_estimator, cfg.ppo.kl_in) == ("k3", "loss")
    # both: the exact KL of each position in the reward and the loss; a sampled estimator cannot be it
    (line,) = problems({"ppo": {"kl_in": "both", "kl_estimator": "k3"}})
    assert line == ("ppo.kl_in: 'both' prices the exact KL of each position, in the reward and in the loss; "
                    "set kl_estimator to full (got 'k3')")
    assert from_dict({"ppo": {"kl_in": "both", "kl_estimator": "full"}}).ppo.kl_in == "both"


def test_only_grpo_scales_its_rewards():
    (line,) = problems({"ppo": {"estimator": "rloo", "samples_per_prompt": 4, "scale_rewards": "batch"}})
    assert line == ("ppo.scale_rewards: only grpo scales its rewards (rloo's advantages are whitened over the "
                    "batch by whiten_advantages); leave it at 'group' (got 'batch')")
    (line,) = problems({"ppo": {"estimator": "grpo", "samples_per_prompt": 4, "scale_rewards": "std"}})
    assert line == "ppo.scale_rewards: expected one of 'group' | 'batch' | 'none', got 'std'"
    cfg = from_dict({"ppo": {"estimator": "grpo", "samples_per_prompt": 4, "scale_rewards": "batch"}})
    assert (cfg.ppo.scale_rewards, PPOSettings().scale_rewards) == ("batch", "group")


def test_a_floor_for_beta_needs_the_adaptive_beta_and_sits_under_its_start():
    (line,) = problems({"ppo": {"kl_coef_min": 0.1}})
    assert line == ("ppo.kl_coef_min: a floor for the adaptive beta; set adaptive_kl to true, or kl_coef_min "
                    "to null (got 0.1)")
    (line,) = problems({"ppo": {"adaptive_kl": True, "kl_coef": 0.2, "kl_coef_min": 0.3}})
    assert line == "ppo.kl_coef_min: 0.3 is above the starting kl_coef 0.2; the floor must be at most kl_coef"
    assert from_dict({"ppo": {"adaptive_kl": True, "kl_coef": 0.3, "kl_coef_min": 0.2}}).ppo.kl_coef_min == 0.2


def test_the_forward_kl_share_needs_the_whole_distributions_and_is_a_share():
    (line,) = problems({"ppo": {"kl_in": "loss", "kl_estimator": "k3", "kl_forward_weight": 0.5}})
    assert line == ("ppo.kl_forward_weight: the forward KL is taken over the whole vocabulary; set kl_estimator "
                    "to full, or kl_forward_weight to 0 (got 0.5)")
    (line,) = problems({"ppo": {"kl_in": "loss", "kl_estimator": "full", "kl_forward_weight": 1.5}})
    assert line == "ppo.kl_forward_weight: 1.5 is out of range; allowed [0.0, 1.0]"
    assert from_dict({"ppo": {"kl_in": "loss", "kl_estimator": "full", "kl_forward_weight": 0.5}}).ppo.kl_forward_weight == 0.5


def test_the_positive_advantage_weight_is_a_share():
    (line,) = problems({"ppo": {"positive_advantage_weight": 1.5}})
    assert line == "ppo.positive_advantage_weight: 1.5 is out of range; allowed [0.0, 1.0]"
    assert PPOSettings().positive_advantage_weight == 1.0
    assert from_dict({"ppo": {"positive_advantage_weight": 0.1}}).ppo.positive_advantage_weight == 0.1


def test_eva_starts_a_new_adapter_from_enough_prompts():
    (line,) = problems({"lora": {"init": "eva", "init_from": "/some/adapter"}})
    assert line == ("lora.init: 'eva' initializes a new adapter, and init_from '/some/adapter' continues a saved "
                    "one; set init to random, or init_from to null")
    (line,) = problems({"lora": {"init": "eva", "eva_prompts": 4}})
    assert line == "lora.eva_prompts: 4 is out of range; allowed [8, inf]"
    (line,) = problems({"lora": {"init": "pissa"}})
    assert line.startswith("lora.init: expected one of 'random' | 'eva'")
    assert from_dict({"lora": {"init": "eva"}}).lora.eva_prompts == 1024


def test_recipe_fields_and_bounds():
    ppo = PPOSettings()
    assert (ppo.weight_decay, ppo.critic, ppo.kl_in, ppo.reward_norm, ppo.early_stop_kl) == (
        0.0, "detached", "reward", True, None)
    lines = problems({"ppo": {"missing_eos_penalty": -1.0, "weight_decay": -0.1, "early_stop_kl": 0.0,
                              "reward_clip": 0.0, "critic": "own"}})
    assert "ppo.missing_eos_penalty: -1.0 is out of range; allowed [0.0, inf]" in lines
    assert any(l.startswith("ppo.weight_decay: -0.1 is out of range") for l in lines)
    assert any(l.startswith("ppo.early_stop_kl: 0.0 is out of range") for l in lines)
    assert any(l.startswith("ppo.reward_clip: 0.0 is out of range") for l in lines)
    assert any(l.startswith("ppo.critic: expected one of 'detached' | 'shared'") for l in lines)
    assert from_dict({"ppo": {"early_stop_kl": None, "reward_clip": None}}).ppo.reward_clip is None


@pytest.mark.parametrize("name", ["..", ".", "a/b", " x"])
def test_run_name_is_one_directory_name(name):
    (line,) = problems({"run": {"name": name}})
    assert line.startswith(f"run.name: {name!r} must be one directory name")


def test_config_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"config file {str(path)!r}: not UTF-8 text (byte 0xe9 at offset 16)"



def test_critic_warmup_needs_a_critic_and_leaves_policy_iterations():
    from rlaf_ray.config import ConfigError, from_dict

    assert from_dict({"ppo": {"critic_warmup": 3, "num_iterations": 10}}).ppo.critic_warmup == 3
    with pytest.raises(ConfigError, match=r"critic_warmup: rloo has no critic to warm up"):
        from_dict({"ppo": {"critic_warmup": 3, "estimator": "rloo", "samples_per_prompt": 4, "batch_size": 8}})
    with pytest.raises(ConfigError, match=r"critic_warmup: 10 iterations leave none of num_iterations=10"):
        from_dict({"ppo": {"critic_warmup": 10, "num_iterations": 10}})
