"""A run never silently continues another: the checks on a run directory that already holds one."""

from __future__ import annotations

import json
import sys
import types

import pytest
import yaml

from rlaf_ray.config import ConfigError, RLAFConfig, dump_yaml, from_dict, leaf_fields
from rlaf_ray.run_guard import IGNORED, RESUMABLE, check_run_dir, save_run_config
from tests.conftest import UNBUILT_CLASSIFIER, UNBUILT_POLICY, base_config


def config(tmp_path, **sections) -> RLAFConfig:
    return from_dict(base_config(UNBUILT_POLICY, UNBUILT_CLASSIFIER, tmp_path, **sections))


def started(cfg: RLAFConfig, resume: bool = False, command: str = "train") -> str:
    """What the driver does before Ray starts, then where config.yaml is written."""
    return save_run_config(cfg, check_run_dir(cfg, resume, command), command)


def one_line_error(cfg: RLAFConfig, resume: bool = False, command: str = "train") -> str:
    with pytest.raises(ConfigError) as err:
        check_run_dir(cfg, resume, command)
    assert len(err.value.problems) == 1 and "\n" not in str(err.value)
    return str(err.value)


def test_new_run_writes_its_config(tmp_path):
    cfg = config(tmp_path)
    assert started(cfg).startswith("[rlaf] new train run in ")
    assert (cfg.run_dir / "config.yaml").read_text() == dump_yaml(cfg)
    assert json.loads((cfg.run_dir / "run.json").read_text()) == {"command": "train"}


def test_same_config_resumes_and_leaves_the_saved_one_alone(tmp_path):
    started(config(tmp_path))
    saved = config(tmp_path).run_dir / "config.yaml"
    before = saved.stat().st_mtime_ns
    assert "continuing the train run" in started(config(tmp_path))
    assert saved.stat().st_mtime_ns == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["config.yaml", "run.json"]


def test_more_iterations_need_resume_and_keep_the_previous_config(tmp_path):
    first = config(tmp_path)
    started(first)
    more = config(tmp_path, ppo={"num_iterations": 4})
    message = one_line_error(more)
    assert "ppo.num_iterations: 2 -> 4" in message and "add --resume" in message

    assert "ppo.num_iterations: 2 -> 4; previous settings kept in config.1.yaml" in started(more, resume=True)
    run_dir = first.run_dir
    assert (run_dir / "config.1.yaml").read_text() == dump_yaml(first)
    assert (run_dir / "config.yaml").read_text() == dump_yaml(more)
    # Each further change keeps the one before: nothing is overwritten.
    started(config(tmp_path, ppo={"num_iterations": 6}), resume=True)
    assert (run_dir / "config.1.yaml").read_text() == dump_yaml(first)
    assert (run_dir / "config.2.yaml").read_text() == dump_yaml(more)


def test_placement_and_evaluation_changes_resume_with_resume(tmp_path):
    started(config(tmp_path))
    changed = config(tmp_path, run={"checkpoint_every": 1, "max_failures": 3},
                     resources={"rollout": {"num_workers": 2, "num_cpus": 0.5}},
                     evaluation={"after_train": True, "max_prompts": 7})
    keys = [key for key, _, _ in check_run_dir(changed, resume=True)]
    assert keys == ["evaluation.max_prompts", "evaluation.after_train", "resources.rollout.num_workers",
                    "resources.rollout.num_cpus", "run.checkpoint_every", "run.max_failures"]


@pytest.mark.parametrize("sections, named", [
    ({"ppo": {"learning_rate": 1e-3}}, "ppo.learning_rate: 0.003 -> 0.001"),
    ({"resources": {"learner": {"num_workers": 4, "num_cpus": 0.5}}}, "resources.learner.num_workers: 2 -> 4"),
    ({"ppo": {"num_iterations": 1}}, "ppo.num_iterations: 2 -> 1"),  # the checkpoint may be past the end
    ({"run": {"deterministic": True}, "lora": {"r": 4}}, "lora.r: 8 -> 4"),
])
def test_changes_to_what_is_learned_are_refused_even_with_resume(tmp_path, sections, named):
    started(config(tmp_path))
    for resume in (False, True):
        message = one_line_error(config(tmp_path, **sections), resume=resume)
        assert named in message and "choose a new run.name" in message
    assert "deterministic" not in message  # only the changes that cannot continue are named
    assert not (config(tmp_path).run_dir / "config.1.yaml").exists()


def test_resume_needs_a_saved_run(tmp_path):
    message = one_line_error(config(tmp_path), resume=True)
    assert message.startswith("--resume: no run to resume in ") and "drop --resume" in message


def test_a_tune_trial_restarted_resumes(tmp_path):
    """Tune restarts a trial with the same values; a resumed search may change tune.* only, and
    the run directory may have moved."""
    started(config(tmp_path))
    restarted = config(tmp_path, tune={"max_concurrent_trials": 3, "driver_num_cpus": 0.1})
    assert check_run_dir(restarted) == []
    moved = restarted.replace(run={"output_dir": str(tmp_path / "moved")})
    (tmp_path / "results").rename(tmp_path / "moved")
    assert check_run_dir(moved) == []


def test_sft_and_train_do_not_continue_each_other(tmp_path):
    started(config(tmp_path), command="sft")
    assert "holds a run of rlaf-ray sft, which rlaf-ray train cannot continue" in one_line_error(config(tmp_path))
    # what sft does not read does not count for sft
    assert check_run_dir(config(tmp_path, ppo={"learning_rate": 1e-3}), command="sft") == []
    assert "sft.learning_rate" in one_line_error(config(tmp_path, sft={"learning_rate": 1e-3}), command="sft")


def test_a_directory_with_another_runs_files_is_not_taken(tmp_path):
    run_dir = config(tmp_path).run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("{}\n")
    assert "holds metrics.jsonl but no config.yaml" in one_line_error(config(tmp_path))


def test_a_config_saved_before_a_new_field_existed_resumes(tmp_path):
    cfg = config(tmp_path)
    started(cfg)
    saved = yaml.safe_load((cfg.run_dir / "config.yaml").read_text())
    del saved["run"]["deterministic"]  # written by a version without the field
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert check_run_dir(cfg) == []


def test_an_invalid_saved_config_names_its_file(tmp_path):
    cfg = config(tmp_path)
    started(cfg)
    (cfg.run_dir / "config.yaml").write_text("ppo:\n  num_iterations: -1\n")
    message = one_line_error(cfg)
    assert "config.yaml" in message and "ppo.num_iterations" in message


def test_every_listed_field_exists():
    fields = list(leaf_fields(RLAFConfig))
    from fnmatch import fnmatchcase

    for pattern in [*RESUMABLE, *IGNORED["train"], *IGNORED["sft"]]:
        assert any(fnmatchcase(f, pattern) for f in fields), pattern


def test_demo_starts_a_new_run_unless_named(tmp_path, monkeypatch):
    from rlaf_ray import cli

    seen = []

    def fake_train(cfg, address=None):
        seen.append(cfg.run.name)
        raise ConfigError(["stop here"])

    monkeypatch.setitem(sys.modules, "rlaf_ray.train", types.SimpleNamespace(train=fake_train))
    demo = ["demo", f"run.output_dir={tmp_path}", f"run.cache_dir={tmp_path}"]
    assert cli.main(demo) == 2 and cli.main(demo + ["run.name=mine"]) == 2
    stamped, named = seen
    assert stamped.startswith("offline-tiny-2") and named == "mine"

    monkeypatch.setattr("time.strftime", lambda fmt: "20261101-120000")
    cfg = from_dict({"run": {"name": "offline-tiny", "output_dir": str(tmp_path)}})
    assert cli.fresh_run_name(cfg) == "offline-tiny-20261101-120000"
    (tmp_path / "offline-tiny-20261101-120000").mkdir()
    assert cli.fresh_run_name(cfg) == "offline-tiny-20261101-120000-2"
