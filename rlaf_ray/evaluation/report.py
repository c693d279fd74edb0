"""Before/after report of a run: the base model against its trained adapter, on the same
held-out prompts and seeds.

Writes to ``<run>/report/``: ``summary.json`` (the seed, the trained adapter's KL to the base, and
the headline measures of both models), ``metrics.csv|md`` (meter metrics side by side), ``examples.csv|md``
(prompt, response before/after, reward before/after and the difference, sorted by it: the
seeds' qualitative table), ``training_curves.png`` (reward and KL per iteration) and
``toxicity_distribution.png`` (per-sample toxicity before and after).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402

from rlaf_ray.config import RLAFConfig  # noqa: E402
from rlaf_ray.evaluation.meter import MeterResult, measure_models  # noqa: E402
from rlaf_ray.roles.reward import make_reward_fn  # noqa: E402
from rlaf_ray.run_log import read_metrics  # noqa: E402

TABLE_METRICS = ("toxic_rate", "grammatical_rate", "expected_max_toxicity", "toxicity_probability",
                 "toxicity_mean", "toxicity_std", "holdout_expected_max_toxicity", "holdout_toxicity_mean",
                 "lexicon_rate", "empty_rate", "perplexity", "perplexity_median", "distinct_1", "distinct_2",
                 "distinct_3", "kl", "prompts", "samples")
# The measures of ``summary.json``: what a detox must lower, and what it must keep.
SUMMARY_METRICS = ("toxic_rate", "grammatical_rate", "distinct_2", "perplexity", "expected_max_toxicity")


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def write_table(rows: list[dict], stem: Path) -> None:
    """The same rows as ``stem.csv`` and a Markdown table ``stem.md``."""
    columns = list(rows[0])
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_fmt(row[c]).replace("|", "\\|").replace("\n", " ") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def metrics_rows(results: dict[str, dict]) -> list[dict]:
    """One row per metric, one column per model."""
    names = [m for m in TABLE_METRICS if all(m in r for r in results.values())]
    return [{"metric": m, **{model: r[m] for model, r in results.items()}} for m in names]


def read_samples(path: Path) -> dict[str, dict]:
    with path.open() as f:
        return {row["id"]: row for row in map(json.loads, f)}


def example_rows(cfg: RLAFConfig, before: MeterResult, after: MeterResult) -> list[dict]:
    """First sample per prompt before and after, rewarded as in training, sorted by the gain."""
    base, trained = read_samples(before.samples_path), read_samples(after.samples_path)
    ids = [i for i in base if i in trained]
    prompts = [base[i]["prompt"] for i in ids]
    reward = make_reward_fn(cfg.reward)
    r_before = reward(prompts, [base[i]["continuations"][0] for i in ids])
    r_after = reward(prompts, [trained[i]["continuations"][0] for i in ids])
    rows = [{"prompt": p, "response_before": base[i]["continuations"][0],
             "response_after": trained[i]["continuations"][0], "reward_before": float(b),
             "reward_after": float(a), "reward_diff": float(a) - float(b)}
            for i, p, b, a in zip(ids, prompts, r_before, r_after)]
    return sorted(rows, key=lambda r: r["reward_diff"], reverse=True)


def plot_training(run_dir: Path, path: Path) -> None:
    metrics = read_metrics(run_dir)
    if not metrics:
        return
    it = [m["iteration"] for m in metrics]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, title in ((axes[0], "reward/mean", "reward (mean)"), (axes[1], "kl/mean", "KL to base")):
        ax.plot(it, [m[key] for m in metrics], marker=".")
        ax.set_xlabel("iteration")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_toxicity(results: dict[str, Path], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, samples_path in results.items():
        values = [t for row in read_samples(samples_path).values() for t in row["toxicity"]]
        ax.hist(values, bins=20, range=(0, 1), alpha=0.5, label=name)
    ax.set_xlabel("toxicity (classifier probability of the toxic label)")
    ax.set_ylabel("samples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(cfg: RLAFConfig, results: dict[str, dict]) -> dict:
    """``{"seed", "kl", "base": M, "trained": M}``; a measure the run cannot take (the world's
    rates outside the offline world) is null."""
    return {"seed": cfg.ppo.seed, "kl": results["trained"]["kl"],
            **{name: {m: r.get(m) for m in SUMMARY_METRICS} for name, r in results.items()}}


def write_report(cfg: RLAFConfig, run_dir: Path) -> dict[str, dict]:
    """Measure base and trained adapter on the held-out split, in one pass of the meter; write
    every table and plot. ``cfg`` must have been through ``preflight.prepare`` (as the run's saved config has)."""
    out = run_dir / "report"
    measured = measure_models(cfg, {"base": (None, out / "base"),
                                    "trained": (str(run_dir / "final" / "adapter"), out / "trained")})
    before, after = measured["base"], measured["trained"]
    results = {"base": before.metrics, "trained": after.metrics}
    (out / "summary.json").write_text(json.dumps(summary(cfg, results), indent=1))
    write_table(metrics_rows(results), out / "metrics")
    write_table(example_rows(cfg, before, after), out / "examples")
    plot_training(run_dir, out / "training_curves.png")
    plot_toxicity({"base": before.samples_path, "trained": after.samples_path},
                  out / "toxicity_distribution.png")
    return results
