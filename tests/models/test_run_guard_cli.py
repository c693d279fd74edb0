"""``rlaf-ray train`` in a run directory that holds a run: the guard answers before Ray starts."""

from __future__ import annotations

import sys

import yaml

from rlaf_ray.cli import main
from tests.conftest import base_config


def test_train_command_refuses_before_ray_starts(no_ray, policy_path, classifier_path, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base_config(policy_path, classifier_path, tmp_path)))
    train = ["train", "--config", str(path)]

    assert main(train + ["--resume"]) == 2
    assert "rlaf-ray: error: --resume: no run to resume in " in capsys.readouterr().err

    # A run saved there (as train writes it, paths prepared): a change needs --resume, or a new name.
    from rlaf_ray.config import load_config
    from rlaf_ray.preflight import prepare
    from rlaf_ray.run_guard import save_run_config

    save_run_config(prepare(load_config(path)), [])
    assert main(train + ["ppo.num_iterations=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ppo.num_iterations: 2 -> 5" in err[0] and "add --resume" in err[0]
    assert main(train + ["--resume", "lora.r=4"]) == 2
    assert "lora.r: 8 -> 4" in capsys.readouterr().err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
