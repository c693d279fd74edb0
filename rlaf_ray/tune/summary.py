"""The outcome of a search: ``trials.csv`` / ``trials.md`` (best first) and ``best_config.yaml``.

Read from Tune's saved experiment state (``ExperimentAnalysis``), so it describes the search as
Tune left it, including trials a stopped driver never finished.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaf_ray.config import RLAFConfig, TuneSettings, dump_yaml, from_dict, merge
from rlaf_ray.storage import CHECKPOINT_PREFIX, RunStorage, checkpoint_iteration
from rlaf_ray.tune.space import Dimension, flat_values, nested

# Shown beside the searched metric, when it is not the metric itself; the world's ground truth
# (the last iteration's samples) when the search runs in the offline world.
BESIDE = ("objective", "reward/mean", "kl/mean", "world/toxic_rate", "world/grammatical_rate")


@dataclass
class TrialRow:
    trial_id: str
    values: dict[str, Any]  # the searched fields
    metrics: dict[str, float]  # last reported: the metric and BESIDE
    iterations: int  # PPO iterations reported to Tune
    num_iterations: int  # what the trial was to run
    status: str
    adapter: str  # final/adapter, else the adapter of the latest checkpoint it reported, else ""
    path: Path


def _status(tune_status: str, iterations: int, num_iterations: int, scheduler: str) -> str:
    # Tune marks a trial that ASHA stopped TERMINATED, as one that finished: its iteration count
    # tells them apart (ASHA never stops a trial on its last iteration, see rlaf_ray.tune.search).
    if tune_status == "ERROR":
        return "error"
    if tune_status != "TERMINATED":
        return "unfinished (--resume continues it)" if iterations else "not started"
    if iterations >= num_iterations:
        return "completed"
    return f"stopped early at iteration {iterations} ({'ASHA' if scheduler == 'asha' else 'scheduler'})"


def _adapter(store: RunStorage, trial_id: str, iterations: int) -> str:
    """A stopped trial never wrote final/adapter: the adapter of its latest checkpoint at or
    before the last iteration it reported is the nearest, the one whose metrics the summary shows.
    A later checkpoint can exist: a trial's learners are killed with it, not at once, so one may
    finish another iteration after the scheduler stopped the trial; it was never judged, and
    counting it would make the summary depend on when it is read.
    Where it is for a person: under the search's path or URI (checkpoints are not pulled)."""
    trial_dir = store.local / trial_id
    if (trial_dir / "final" / "adapter").is_dir():
        return store.where(f"{trial_id}/final/adapter")
    # A checkpoint directory may be empty (made, then cleaned up): only one with an adapter counts;
    # a staging directory's name has no iteration and is never chosen.
    checkpoints = sorted(p.parent.name for p in trial_dir.glob(f"{CHECKPOINT_PREFIX}*/adapter")
                         if p.is_dir() and checkpoint_iteration(p.parent.name) <= iterations)
    return store.where(f"{trial_id}/{checkpoints[-1]}/adapter") if checkpoints else ""


def collect(store: RunStorage, user_cfg: RLAFConfig, dims: list[Dimension]) -> list[TrialRow]:
    from ray.tune import ExperimentAnalysis

    t = user_cfg.tune
    exp = store.local
    analysis = ExperimentAnalysis(store.location, default_metric=t.metric, default_mode=t.mode)
    rows = []
    for trial in analysis.trials:
        last = trial.last_result or {}
        values = flat_values(trial.config, dims)
        num_iterations = from_dict(merge(user_cfg.to_dict(), nested(values))).ppo.num_iterations
        iterations = int(last.get("iteration", 0))
        trial_dir = exp / trial.trial_id
        rows.append(TrialRow(
            trial_id=trial.trial_id, values=values,
            metrics={k: float(last[k]) for k in (t.metric, *BESIDE) if isinstance(last.get(k), (int, float))},
            iterations=iterations, num_iterations=num_iterations,
            status=_status(trial.status, iterations, num_iterations, t.scheduler),
            adapter=_adapter(store, trial.trial_id, iterations), path=trial_dir))
    return rank(rows, t.metric, t.mode)


def rank(rows: list[TrialRow], metric: str, mode: str) -> list[TrialRow]:
    """Best first by the last reported metric (Tune's ``get_best_result(scope="last")``); trials
    without a finite value last, in their original order."""
    sign = -1.0 if mode == "max" else 1.0

    def key(row: TrialRow):
        value = row.metrics.get(metric)
        ok = value is not None and math.isfinite(value)
        return (0, sign * value) if ok else (1, 0.0)

    return sorted(rows, key=key)


def _shown_metrics(user_cfg: RLAFConfig, rows: list[TrialRow]) -> list[str]:
    """The searched metric, then those of BESIDE that some trial reported."""
    metric = user_cfg.tune.metric
    return [metric] + [m for m in BESIDE if m != metric and any(m in r.metrics for r in rows)]


def _columns(dims: list[Dimension], shown: list[str]) -> list[str]:
    return ["rank", "trial"] + [d.field for d in dims] + shown + ["iterations", "status", "adapter"]


def _cells(rank_: int, row: TrialRow, dims: list[Dimension], shown: list[str]) -> list[Any]:
    metrics = [row.metrics.get(m, "") for m in shown]
    return ([rank_, row.trial_id] + [row.values[d.field] for d in dims] + metrics
            + [f"{row.iterations}/{row.num_iterations}", row.status, row.adapter])


def _md(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def best_config(user_cfg: RLAFConfig, best: TrialRow, search_name: str) -> RLAFConfig:
    """The search's configuration with the best trial's values: a ``train`` config whose run is
    ``<search name>-best`` next to the search's directory."""
    data = merge(user_cfg.to_dict(), nested(best.values))
    data["run"]["name"] = f"{search_name}-best"
    data["tune"] = TuneSettings().model_dump()  # the search settings do not apply to train
    return from_dict(data)


def summarize(store: RunStorage, user_cfg: RLAFConfig, dims: list[Dimension]) -> list[TrialRow]:
    """Write trials.csv, trials.md and (when a trial reported the metric) best_config.yaml into the
    search's directory (at a URI: into its mirror, then pushed)."""
    t = user_cfg.tune
    store.pull()  # the trials' files, written by their drivers and learners wherever they ran
    exp = store.local
    rows = collect(store, user_cfg, dims)
    shown = _shown_metrics(user_cfg, rows)
    columns = _columns(dims, shown)
    table = [_cells(i + 1, row, dims, shown) for i, row in enumerate(rows)]
    with (exp / "trials.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(table)
    lines = [f"# Search {user_cfg.run.name}: {t.metric} ({t.mode}), {t.search_alg} search, {t.scheduler} scheduler",
             "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md(v) for v in cells) + " |" for cells in table]

    best = rows[0] if rows and t.metric in rows[0].metrics else None
    if best is not None:
        config = best_config(user_cfg, best, user_cfg.run.name)
        header = (f"# Best trial {best.trial_id} of search {user_cfg.run.name!r}: {t.metric}="
                  f"{best.metrics[t.metric]:.6g} ({best.status}).\n"
                  f"# Searched values: {', '.join(f'{k}={v!r}' for k, v in best.values.items())}.\n"
                  f"# Train it: rlaf-ray train --config {store.where('best_config.yaml')}\n")
        (exp / "best_config.yaml").write_text(header + dump_yaml(config))
        lines += ["", f"Best: trial {best.trial_id} ({best.status}); adapter: {best.adapter or 'none saved'}; "
                      f"train its configuration with `rlaf-ray train --config {store.where('best_config.yaml')}`."]
    (exp / "trials.md").write_text("\n".join(lines) + "\n")
    store.push("trials.csv", "trials.md", *(["best_config.yaml"] if best is not None else []))

    counts: dict[str, int] = {}
    for row in rows:
        kind = row.status.split(" ")[0]
        counts[kind] = counts.get(kind, 0) + 1
    print(f"[rlaf] tune: {len(rows)} trials ({', '.join(f'{n} {k}' for k, n in counts.items())}); "
          f"summary {store.where('trials.md')}", flush=True)
    unfinished = [r.trial_id for r in rows if r.status.startswith(("unfinished", "not started"))]
    if unfinished:
        print(f"[rlaf] tune: {len(unfinished)} trial(s) unfinished ({', '.join(unfinished)}); continue the "
              "search with the same command and --resume", flush=True)
    if best is not None:
        beside = ", ".join(f"{k}={best.metrics[k]:.4g}" for k in BESIDE if k in best.metrics and k != t.metric)
        print(f"[rlaf] tune: best {best.trial_id} {t.metric}={best.metrics[t.metric]:.4g} ({beside}) "
              f"with {', '.join(f'{k}={v!r}' for k, v in best.values.items())}; adapter "
              f"{best.adapter or 'none saved (stopped before its first checkpoint)'}; "
              f"rlaf-ray train --config {store.where('best_config.yaml')}", flush=True)
    return rows
