"""Run storage (rlaf_ray.storage) through a URI, on real files: pyarrow resolves ``file://`` URIs
exactly as it resolves ``s3://`` and ``gs://`` ones, to a filesystem and a path (no Ray)."""

from __future__ import annotations

import json

import pytest

from rlaf_ray.config import ConfigError, from_dict, resolve_paths
from rlaf_ray.run_log import parse_lines
from rlaf_ray.storage import RunStorage, join, local_copy, replace_dir, upload_order


def test_join_keeps_the_scheme():
    assert join("s3://bucket/results", "run", "final") == "s3://bucket/results/run/final"
    assert join("/data/results/", "run") == "/data/results/run"


def test_push_and_pull_round_trip_through_a_uri(tmp_path):
    remote = tmp_path / "bucket"
    storage = RunStorage(f"file://{remote}/results/run", cache_dir=str(tmp_path / "cache"))
    assert storage.remote and not storage.local.is_relative_to(remote)
    (storage.local / "final" / "adapter").mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json"):
        (storage.local / "final" / "adapter" / name).write_text(name)
    (storage.local / "config.yaml").write_text("run: {}\n")
    storage.push("config.yaml", "final", last="adapter_config.json")
    assert sorted(p.name for p in (remote / "results" / "run" / "final" / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "tokenizer.json"]
    assert storage.exists("final/adapter/adapter_config.json") and not storage.exists("report")

    # Another process (another node) reads the run: the whole run but its checkpoints.
    (remote / "results" / "run" / "checkpoint_000004").mkdir()
    (remote / "results" / "run" / "checkpoint_000004" / "learner.pt").write_text("big")
    (remote / "results" / "run" / "checkpoint_000004" / "adapter").mkdir()
    (remote / "results" / "run" / "checkpoint_000004" / "adapter" / "adapter_model.safetensors").write_text("w")
    (remote / "results" / "run" / "checkpoint_manager_snapshot.json").write_text("{}")  # a file: copied
    reader = RunStorage(f"file://{remote}/results/run", cache_dir=str(tmp_path / "other-cache"))
    (reader.local).mkdir(parents=True)
    (reader.local / "stale.txt").write_text("from an earlier pull")
    reader.pull()
    assert (reader.local / "final" / "adapter" / "tokenizer.json").read_text() == "tokenizer.json"
    assert (reader.local / "config.yaml").is_file() and not (reader.local / "stale.txt").exists()
    assert (reader.local / "checkpoint_000004").is_dir()  # seen, so a run is known to be there ...
    assert not (reader.local / "checkpoint_000004" / "learner.pt").exists()  # ... but not copied
    assert (reader.local / "checkpoint_000004" / "adapter").is_dir()  # its directories are: which holds an adapter
    assert not (reader.local / "checkpoint_000004" / "adapter" / "adapter_model.safetensors").exists()
    assert (reader.local / "checkpoint_manager_snapshot.json").read_text() == "{}"
    assert local_copy(f"file://{remote}/results/run", str(tmp_path / "third")).joinpath("config.yaml").is_file()


def test_a_pushed_directory_ends_with_its_marker(tmp_path):
    """Object stores have no rename: the adapter's config goes last, so a reader that sees it sees
    the whole adapter."""
    (tmp_path / "final" / "adapter").mkdir(parents=True)
    for name in ("z.bin", "adapter_config.json", "a.bin"):
        (tmp_path / "final" / "adapter" / name).write_text(name)
    (tmp_path / "final" / "value_head.safetensors").write_text("v")
    assert [p.relative_to(tmp_path).as_posix() for p in upload_order(tmp_path / "final", "adapter_config.json")] == [
        "final/adapter/a.bin", "final/adapter/z.bin", "final/value_head.safetensors",
        "final/adapter/adapter_config.json"]


def test_a_local_run_directory_is_its_own_mirror(tmp_path):
    storage = RunStorage(str(tmp_path / "results" / "run"))
    assert not storage.remote and storage.local == tmp_path / "results" / "run"
    storage.push("anything")  # nothing to do, nothing raised
    storage.pull()
    assert not (tmp_path / "results").exists()


def test_an_unwritable_uri_is_one_line_before_any_actor(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("a file where the directory would be")
    with pytest.raises(ConfigError, match=r"^run.output_dir: cannot write to 'file://.*file-not-dir/run': ") as err:
        RunStorage(f"file://{blocked}/run").probe()
    assert "\n" not in str(err.value)


def test_a_relative_output_dir_is_refused_under_a_job(tmp_path, monkeypatch):
    cfg = from_dict({"run": {"output_dir": "results"}})
    monkeypatch.chdir(tmp_path)
    assert resolve_paths(cfg).run.output_dir == str(tmp_path / "results")  # a plain run: made absolute
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {}}))
    with pytest.raises(ConfigError, match=r"^run.output_dir: 'results' is relative, and under `ray job submit`"):
        resolve_paths(cfg)
    for kept in ("/mnt/shared/results", "s3://bucket/results", "gs://bucket/results"):
        assert resolve_paths(from_dict({"run": {"output_dir": kept}})).run.output_dir == kept
    assert resolve_paths(from_dict({"run": {"output_dir": "~/results"}})).run.output_dir.startswith("/")


def test_run_dir_of_a_uri_is_a_local_mirror(tmp_path):
    cfg = from_dict({"run": {"output_dir": "s3://bucket/results", "name": "r1", "cache_dir": str(tmp_path)}})
    assert cfg.run_storage.where("final/adapter") == "s3://bucket/results/r1/final/adapter"
    assert cfg.run_dir.is_relative_to(tmp_path) and cfg.run_dir.name == "r1"


def test_a_torn_last_metrics_line_is_dropped_not_a_crash():
    good = json.dumps({"iteration": 1, "reward/mean": 0.5})
    assert parse_lines(f"{good}\n{good[:-7]}") == [json.loads(good)]
    with pytest.raises(json.JSONDecodeError):  # damage elsewhere is not hidden
        parse_lines(f"{good[:-7]}\n{good}\n")


def test_replace_dir_swaps_a_whole_directory(tmp_path):
    target, new = tmp_path / "final", tmp_path / "final.partial"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace_dir(new, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"] and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
