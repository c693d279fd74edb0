"""Reading a configuration: YAML file, dict ``extra`` and ``key.sub=value`` overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from rlaf_ray.config.errors import ConfigError
from rlaf_ray.config.root import RLAFConfig, from_dict


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["ppo.batch_size=8", "lora.target_modules=[q_proj,v_proj]"]`` -> nested dict.

    Values are parsed as YAML, so numbers, booleans, null and lists work as on the command line.
    """
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([f"override {item!r}: expected key.sub=value"])
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``, section by section (nested dicts merge, other values replace)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line report as one line: where, and what it expected."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {getattr(err, 'problem', None) or str(err).splitlines()[0]}"


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"config file {str(p)!r}: not found"])
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError([f"config file {str(p)!r}: not UTF-8 text (byte {err.object[err.start]:#04x} at "
                           f"offset {err.start})"])
    except yaml.YAMLError as err:
        raise ConfigError([f"config file {str(p)!r}: {yaml_problem(err)}"])
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError([f"config file {str(p)!r}: expected a mapping at the top level"])
    return loaded or {}


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                extra: dict[str, Any] | None = None) -> RLAFConfig:
    """Load YAML (optional), apply dict ``extra`` then ``key=value`` overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    if extra:
        data = merge(data, extra)
    if overrides:
        data = merge(data, parse_overrides(overrides))
    return from_dict(data)


def dump_yaml(c: RLAFConfig) -> str:
    return yaml.safe_dump(c.to_dict(), sort_keys=False)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the YAML files (for editors' completion and checks)."""
    schema = RLAFConfig.model_json_schema()
    schema["title"] = "rlaf_ray configuration"
    return schema
