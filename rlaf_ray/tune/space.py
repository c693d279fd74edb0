"""The search space of ``rlaf-ray tune``: parsed, checked and turned into Ray Tune domains.

``tune.search_space`` maps a dotted config field to one spec::

    lora.r:             {choice: [4, 8, 16]}        # sampled (with replacement)
    lora.alpha:         {grid: [16, 32]}            # every value, in order (random search only)
    ppo.learning_rate:  {loguniform: [1e-5, 1e-3]}
    ppo.kl_coef:        {uniform: [0.02, 0.2]}      # on an integer field: integers, high included

Everything here runs before Ray starts, so that a bad search fails at once with one line per
problem (``ConfigError``) instead of inside every trial.
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
from dataclasses import dataclass
from typing import Any

from rlaf_ray.config import (
    ConfigError,
    Number,
    RLAFConfig,
    check_value,
    from_dict,
    leaf_fields,
    merge,
    numeric_kind,
    type_name,
)

SPEC_KINDS = ("choice", "grid", "uniform", "loguniform")
SPEC_HELP = "{choice: [...]}, {grid: [...]}, {uniform: [low, high]} or {loguniform: [low, high]}"

# Fields a trial sets itself: its run name is its trial id, its directory is in the search's.
NOT_SEARCHABLE = {"run.name": "each trial's run.name is its trial id",
                  "run.output_dir": "each trial runs in the search's directory"}

# Every metric a train run reports each iteration (``ray.train.report`` in rlaf_ray.roles.learner,
# the same keys as a line of metrics.jsonl): PPOLearner.step's batch statistics, learner_loop's
# timings and memory, and the iteration. the Tune tests compare it with a real run's keys.
REPORTED_METRICS = frozenset({
    "iteration",
    "reward/mean", "reward/std", "reward/non_finite", "reward/normalized_mean", "reward/running_mean",
    "reward/running_std",
    "kl/mean", "kl/coef",
    "ppo/policy_loss", "ppo/value_loss", "ppo/entropy", "ppo/clip_fraction", "ppo/value_clip_fraction",
    "ppo/approx_kl", "ppo/grad_norm", "ppo/value_grad_norm", "ppo/kl_to_ref", "ppo/epochs_run",
    "ppo/early_stopped", "ppo/critic_only", "ppo/learning_rate",
    "offpolicy/staleness_mean", "offpolicy/staleness_max", "offpolicy/is_weight_mean", "offpolicy/is_truncated_fraction",
    "response/length_mean", "response/ended_fraction",
    "time/generate", "time/score", "time/rollout_wall", "time/learn", "time/sync", "time/iteration", "time/finished_at",
    "perf/samples_per_second", "policy/version", "data/epoch", "params/trainable",
    "memory/learner_peak_mib", "memory/rollout_peak_mib", "memory/reward_peak_mib",
    "objective", "world/toxic_rate", "world/grammatical_rate",
})
# Reported only in the offline world (``evaluation.judge``).
JUDGED_METRICS = frozenset({"world/toxic_rate", "world/grammatical_rate"})

# Above this many combinations of probe values, each dimension is probed on its own.
MAX_PROBES = 256


@dataclass(frozen=True)
class Dimension:
    """One searched field."""

    field: str  # dotted, e.g. "lora.r"
    kind: str  # one of SPEC_KINDS
    values: tuple  # choice/grid values, or (low, high)
    integer: bool  # an integer field: uniform/loguniform draw integers

    def domain(self):
        from ray import tune

        low, high = (self.values + (None, None))[:2]
        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "uniform":
            # randint's upper bound is exclusive; the config's [low, high] includes high.
            return tune.randint(low, high + 1) if self.integer else tune.uniform(low, high)
        return tune.lograndint(low, high + 1) if self.integer else tune.loguniform(low, high)

    def probe_values(self) -> list:
        """The values to check a config with: every listed value, or both bounds."""
        return list(self.values)


def _parse_one(name: str, spec: Any, fields: dict[str, Any], search_alg: str) -> tuple[Dimension | None, list[str]]:
    where = f"tune.search_space.{name}"
    if name in NOT_SEARCHABLE:
        return None, [f"{where}: not searchable; {NOT_SEARCHABLE[name]}"]
    if name.startswith("tune.") or name == "tune":
        return None, [f"{where}: not searchable; the tune section configures the search itself"]
    if name not in fields:
        close = difflib.get_close_matches(name, list(fields), n=3, cutoff=0.6)
        sections = sorted({f.split(".")[0] for f in fields} - {"tune"})
        hint = f"did you mean {', '.join(close)}? " if close else ""
        if name in sections:
            return None, [f"{where}: a section, not a field; name one of its fields, e.g. "
                          f"{next(f for f in fields if f.startswith(name + '.'))}"]
        return None, [f"{where}: unknown config field; {hint}fields are dotted, e.g. lora.r, "
                      f"ppo.learning_rate (sections: {', '.join(sections)})"]
    tp = fields[name]
    if not isinstance(spec, dict) or len(spec) != 1:
        return None, [f"{where}: expected one of {SPEC_HELP}, got {spec!r}"]
    (kind, raw), = spec.items()
    if kind not in SPEC_KINDS:
        close = difflib.get_close_matches(str(kind), SPEC_KINDS, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}? " if close else ""
        return None, [f"{where}: unknown spec {kind!r}; {hint}expected one of {SPEC_HELP}"]

    if kind in ("choice", "grid"):
        if not isinstance(raw, list):
            return None, [f"{where}.{kind}: expected a list of values, got {raw!r}"]
        if not raw:
            return None, [f"{where}: empty {kind} list; give at least one value"]
        if kind == "grid" and search_alg != "random":
            return None, [f"{where}: grid needs tune.search_alg=random ({search_alg} samples, it does not "
                          "enumerate); use choice"]
        values, problems = [], []
        for i, value in enumerate(raw):
            try:
                values.append(check_value(tp, value, f"{where}.{kind}[{i}]"))
            except ValueError as err:
                problems.append(str(err))
        if problems:
            return None, problems
        return Dimension(name, kind, tuple(values), numeric_kind(tp) == "int"), []

    return _parse_range(name, kind, raw, tp)


def _parse_range(name: str, kind: str, raw: Any, tp: Any) -> tuple[Dimension | None, list[str]]:
    """A ``uniform``/``loguniform`` spec: ``[low, high]`` on a numeric field."""
    where = f"tune.search_space.{name}"
    number = numeric_kind(tp)
    if number is None:
        return None, [f"{where}: {kind} needs a numeric field; {name} is {type_name(tp)}: use choice"]
    if not isinstance(raw, list) or len(raw) != 2:
        return None, [f"{where}.{kind}: expected [low, high], got {raw!r}"]
    try:
        # Numbers as YAML reads them: "1e-5" (no dot) is a string to PyYAML.
        low, high = (check_value(Number, v, f"{where}.{kind}") for v in raw)
    except ValueError as err:
        return None, [str(err)]
    if number == "int":
        if low != int(low) or high != int(high):
            return None, [f"{where}.{kind}: {name} is an integer field; expected integer bounds, got {raw!r}"]
        low, high = int(low), int(high)
    if low >= high:
        return None, [f"{where}.{kind}: low {low!r} is not below high {high!r}"]
    if kind == "loguniform" and low <= 0:
        return None, [f"{where}.loguniform: low must be above 0 for a log scale, got {low!r}"]
    return Dimension(name, kind, (low, high), number == "int"), []


def parse_search_space(cfg: RLAFConfig) -> list[Dimension]:
    """The search's dimensions; ``ConfigError`` naming every bad entry."""
    t = cfg.tune
    if not t.search_space:
        raise ConfigError(["tune.search_space: empty; give at least one field to search, "
                           "e.g. {lora.r: {choice: [4, 8, 16]}}"])
    fields = leaf_fields(RLAFConfig)
    dims, problems = [], []
    for name, spec in t.search_space.items():
        dim, errs = _parse_one(str(name), spec, fields, t.search_alg)
        problems += errs
        if dim is not None:
            dims.append(dim)
    if problems:
        raise ConfigError(problems)
    return dims


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """``{"lora.r": 8}`` -> ``{"lora": {"r": 8}}``."""
    tree: dict[str, Any] = {}
    for dotted, value in values.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def flat_values(sampled: dict[str, Any], dims: list[Dimension]) -> dict[str, Any]:
    """A trial's nested Tune config -> ``{"lora.r": 8, ...}`` for the searched fields."""
    out = {}
    for dim in dims:
        node: Any = sampled
        for part in dim.field.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[dim.field] = node
    return out


def param_space(dims: list[Dimension]) -> dict[str, Any]:
    """Tune's ``param_space``: nested like the config, so a trial's config merges in as is."""
    return nested({dim.field: dim.domain() for dim in dims})


def probe_points(dims: list[Dimension]) -> list[dict[str, Any]]:
    """Combinations of every dimension's probe values (one dimension at a time when too many)."""
    value_lists = [dim.probe_values() for dim in dims]
    total = 1
    for values in value_lists:
        total *= len(values)
    if total <= MAX_PROBES:
        return [dict(zip((d.field for d in dims), combo)) for combo in itertools.product(*value_lists)]
    first = {d.field: values[0] for d, values in zip(dims, value_lists)}
    return [{**first, dim.field: value} for dim, values in zip(dims, value_lists) for value in values]


def probe_configs(base: dict[str, Any], dims: list[Dimension]) -> list[RLAFConfig]:
    """Every probe point applied to ``base`` and validated as a whole run configuration: a
    sampled value that breaks the config (e.g. a batch size the learners cannot split) fails
    here, naming the values that broke it."""
    configs, problems = [], []
    for point in probe_points(dims):
        try:
            configs.append(from_dict(merge(base, nested(point))))
        except ConfigError as err:
            shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
            problems += [f"tune.search_space: with {shown}: {line}" for line in err.problems
                         if f"tune.search_space: with {shown}: {line}" not in problems]
    if problems:
        raise ConfigError(problems[:10])
    return configs


def check_search_settings(cfg: RLAFConfig, probes: list[RLAFConfig]) -> None:
    """Metric, scheduler and search algorithm: usable by this search?"""
    t, problems = cfg.tune, []
    if t.metric not in REPORTED_METRICS:
        close = difflib.get_close_matches(t.metric, sorted(REPORTED_METRICS), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        problems.append(f"tune.metric: {t.metric!r} is not a metric the run reports; {hint}reported: "
                        f"{', '.join(sorted(REPORTED_METRICS))}")
    shortest = min(c.ppo.num_iterations for c in probes)
    if t.scheduler == "asha" and t.grace_period >= shortest:
        problems.append(f"tune.grace_period: {t.grace_period} leaves ASHA no iteration to stop a trial at; "
                        f"it must be below ppo.num_iterations={shortest} (or tune.scheduler=fifo)")
    if t.search_alg != "random" and importlib.util.find_spec(t.search_alg) is None:
        problems.append(f"tune.search_alg: {t.search_alg} is not installed; pip install {t.search_alg} "
                        "(or the rlaf_ray[tune-search] extra), or use tune.search_alg=random")
    if problems:
        raise ConfigError(problems)


def validate_search(cfg: RLAFConfig) -> tuple[list[Dimension], list[RLAFConfig]]:
    """All search checks that need no Ray: the dimensions, and the probe configs they allow."""
    dims = parse_search_space(cfg)
    probes = probe_configs(cfg.to_dict(), dims)
    check_search_settings(cfg, probes)
    return dims, probes
