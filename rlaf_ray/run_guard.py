"""A run never silently continues another: what may start in a run directory that already holds one.

A run directory (``<run.output_dir>/<run.name>``) keeps the configuration it trains with in
``config.yaml``. Started again (Ray Train resumes it from its latest checkpoint):

- with the same settings (compared after ``preflight.prepare``, so paths are absolute and tiny
  models resolved), it resumes, as it always did;
- with changes only in ``RESUMABLE`` fields (none of them changes what the run learns: more
  iterations, checkpoint cadence, placement, the report after training), it resumes only with
  ``--resume``; the previous configuration is kept as ``config.<n>.yaml``;
- with any other change, it is refused: continuing it would mix two runs' settings in one
  adapter and one metrics.jsonl. A new ``run.name`` starts a new run.

Fields the command never reads (``IGNORED``) do not count. This module needs only the config
package, so it is checked before Ray or any actor starts.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Callable

from rlaf_ray.config import ConfigError, RLAFConfig, dump_yaml, leaf_fields, load_config
from rlaf_ray.storage import write_text_atomic

CONFIG_FILE = "config.yaml"
# The command that made the run (train or sft): an sft run must not continue a PPO checkpoint.
RUN_FILE = "run.json"

# Changes that continue the same run, allowed with --resume: a condition, where there is one,
# says which changes. Anything not here (new fields included) counts as changing the run.
RESUMABLE: dict[str, Callable[[Any, Any], bool] | None] = {
    # fewer: the checkpoint may already be past the new end, and final/adapter would not be it
    "ppo.num_iterations": lambda old, new: new >= old,
    "run.checkpoint_every": None,
    "run.keep_checkpoints": None,
    "run.max_failures": None,
    "run.role_restarts": None,
    "run.role_timeout_s": None,
    "run.resource_wait_s": None,
    "run.cache_dir": None,  # a model cached elsewhere still shows as a model path change
    "run.deterministic": None,  # kernels' rounding only, as between any two GPU runs without it
    "model.gradient_checkpointing": None,  # memory against time; the same gradients
    "evaluation.*": None,  # the meter runs after training
    "resources.rollout.num_workers": None,  # each generate call is seeded by iteration and rank
    "resources.reward.num_workers": None,
    "resources.*.num_cpus": None,
    "resources.*.resources": None,  # custom resources place roles on node types
    "data.num_cpus_per_task": None,  # the prompts' order does not depend on Ray Data's tasks
    "data.cache_in_object_store": None,
}

# Fields a command does not read, and where the run lives (found by them, or moved since).
IGNORED = {
    "train": ("run.name", "run.output_dir", "sft.*", "tune.*"),
    "sft": ("run.name", "run.output_dir", "tune.*", "ppo.*", "generation.*", "reward.*", "evaluation.*",
            "resources.rollout.*", "resources.reward.*"),
}
# What a run or a Tune search writes: a directory holding them but no config.yaml is not a run to resume.
OTHER_RUN_FILES = ("search_config.yaml", "metrics.jsonl", "checkpoint_*", "final")


def _matches(key: str, patterns) -> str | None:
    return next((p for p in patterns if fnmatchcase(key, p)), None)


def differences(old: dict, new: dict, command: str = "train") -> list[tuple[str, Any, Any]]:
    """``(dotted field, old, new)`` for every field the command reads that differs."""
    out = []
    for key in leaf_fields(RLAFConfig):
        a, b = _value(old, key), _value(new, key)
        if a != b and not _matches(key, IGNORED[command]):
            out.append((key, a, b))
    return out


def _value(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def resumable(key: str, old: Any, new: Any) -> bool:
    pattern = _matches(key, RESUMABLE)
    return pattern is not None and (RESUMABLE[pattern] is None or RESUMABLE[pattern](old, new))


def _listed(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)


def check_run_dir(cfg: RLAFConfig, resume: bool = False, command: str = "train") -> list[tuple[str, Any, Any]]:
    """May ``cfg`` (prepared) start in its run directory? Raises a one-line ``ConfigError`` if not;
    returns the changes accepted with ``resume`` (empty: a new run, or the same one resumed)."""
    storage = cfg.run_storage
    storage.probe()  # a URI these credentials cannot write: one line now, not at the first checkpoint
    storage.pull()  # a run at a URI: its files (not its checkpoints) into the local mirror
    run_dir, shown = storage.local, storage.where()
    saved_path = run_dir / CONFIG_FILE
    if not saved_path.is_file():
        others = sorted(p.name for pattern in OTHER_RUN_FILES for p in run_dir.glob(pattern))
        if others:
            raise ConfigError([f"run.name: {shown!r} holds {', '.join(others)} but no {CONFIG_FILE}: "
                               "not a run this command can continue; choose a new run.name"])
        if resume:
            raise ConfigError([f"--resume: no run to resume in {shown!r} (no {CONFIG_FILE}); "
                               "drop --resume to start a new run there"])
        return []
    saved_command = _saved_command(run_dir)
    if saved_command not in (None, command):
        raise ConfigError([f"run.name: {shown!r} holds a run of rlaf-ray {saved_command}, which "
                           f"rlaf-ray {command} cannot continue; choose a new run.name"])
    try:
        saved = load_config(saved_path)
    except ConfigError as err:
        raise ConfigError([f"run.name: the saved configuration {storage.where(CONFIG_FILE)!r} is no longer valid "
                           f"({err.problems[0]}); choose a new run.name"]) from None
    changes = differences(saved.to_dict(), cfg.to_dict(), command)
    fixed = [c for c in changes if not resumable(*c)]
    if fixed:
        raise ConfigError([f"run.name: {shown!r} holds a run with other settings ({_listed(fixed)}); "
                           "a run cannot continue with them, even with --resume: choose a new run.name"])
    if changes and not resume:
        raise ConfigError([f"run.name: {shown!r} holds this run with other settings "
                           f"({_listed(changes)}); add --resume to continue it with them, or choose a new run.name"])
    return changes


def _saved_command(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / RUN_FILE).read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        return None  # a run from before run.json: its config.yaml is all there is to check


def save_run_config(cfg: RLAFConfig, changes: list[tuple[str, Any, Any]], command: str = "train") -> str:
    """Write ``config.yaml`` (and ``run.json``) after ``check_run_dir`` passed; returns the line to
    print. A resumed run keeps its file; with accepted changes, the previous one is kept as
    ``config.<n>.yaml`` and the new one written."""
    storage = cfg.run_storage
    run_dir = storage.local
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / CONFIG_FILE
    where = storage.where() if storage.remote else Path(run_dir).resolve()
    if not (run_dir / RUN_FILE).is_file():
        write_text_atomic(run_dir / RUN_FILE, json.dumps({"command": command}) + "\n")
        storage.push(RUN_FILE)
    if not saved.is_file():
        write_text_atomic(saved, dump_yaml(cfg))
        storage.push(CONFIG_FILE)
        return f"[rlaf] new {command} run in {where}"
    if not changes:
        return f"[rlaf] continuing the {command} run in {where} from its latest checkpoint (same settings)"
    kept = previous_config_path(run_dir)
    saved.rename(kept)
    write_text_atomic(saved, dump_yaml(cfg))
    storage.push(kept.name, CONFIG_FILE)
    return (f"[rlaf] continuing the {command} run in {where} from its latest checkpoint with "
            f"{_listed(changes)}; previous settings kept in {kept.name}")


def previous_config_path(run_dir: Path) -> Path:
    """The first free ``config.<n>.yaml``: earlier settings are never overwritten."""
    n = 1
    while (run_dir / f"config.{n}.yaml").exists():
        n += 1
    return run_dir / f"config.{n}.yaml"
