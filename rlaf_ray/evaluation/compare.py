"""Three-way (or more) comparison: the base model and the adapters of finished runs (SFT, RL, ...)
measured by the toxicity meter on the same held-out prompts and seeds; one table, one plot."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlaf_ray.config import ConfigError, RLAFConfig, load_config  # noqa: E402
from rlaf_ray.evaluation.meter import measure_models  # noqa: E402
from rlaf_ray.evaluation.report import TABLE_METRICS, write_table  # noqa: E402
from rlaf_ray.preflight import prepare  # noqa: E402

PLOTTED = ("expected_max_toxicity", "toxicity_probability", "toxicity_mean", "lexicon_rate", "distinct_2")


def run_adapters(run_dirs: list[Path]) -> dict[str, str]:
    """Name -> adapter directory of each finished run (named by its directory)."""
    adapters = {}
    for run_dir in run_dirs:
        adapter = run_dir / "final" / "adapter"
        if not adapter.is_dir():
            raise ConfigError([f"--runs {str(run_dir)!r}: no final/adapter in it; expected a finished run"])
        adapters[run_dir.name] = str(adapter.resolve())
    return adapters


def base_config(run_dirs: list[Path], overrides: list[str]) -> RLAFConfig:
    """The first run's configuration decides the prompts, seeds and meter; every run must adapt
    the same base model, or the comparison would not be one."""
    configs = [load_config(d / "config.yaml") for d in run_dirs]
    for run_dir, cfg in zip(run_dirs[1:], configs[1:]):
        if cfg.model.name_or_path != configs[0].model.name_or_path:
            raise ConfigError([f"--runs {str(run_dir)!r}: trained on model {cfg.model.name_or_path!r}, not "
                               f"{configs[0].model.name_or_path!r} like {str(run_dirs[0])!r}"])
    return load_config(run_dirs[0] / "config.yaml", overrides)


def plot_comparison(results: dict[str, dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(results)
    for i, (name, metrics) in enumerate(results.items()):
        xs = [j + i * width for j in range(len(PLOTTED))]
        ax.bar(xs, [metrics[m] for m in PLOTTED], width=width, label=name)
    ax.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(PLOTTED))])
    ax.set_xticklabels([m.replace("_", "\n") for m in PLOTTED], fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparison_plan(run_dirs: list[Path], overrides: list[str] | None = None) -> tuple[RLAFConfig, dict]:
    """Everything checked before Ray starts: each run is finished and adapts the same base, the
    meter's settings are valid. Returns the configuration to measure with and the models, name ->
    adapter directory (``None`` for the base)."""
    adapters = run_adapters(run_dirs)
    cfg = base_config(run_dirs, overrides or [])
    cfg = prepare(cfg, (cfg.evaluation.split,), evaluation=True)
    return cfg, {"base": None, **adapters}


def compare(cfg: RLAFConfig, models: dict, out_dir: Path) -> list[dict]:
    """Measure every model of ``comparison_plan`` in one pass of the meter; write
    ``comparison.csv|md|png`` to ``out_dir``."""
    measured = measure_models(cfg, {name: (adapter, out_dir / name) for name, adapter in models.items()})
    results = {name: result.metrics for name, result in measured.items()}
    rows = [{"model": name, **{m: r[m] for m in TABLE_METRICS if m in r}} for name, r in results.items()]
    write_table(rows, out_dir / "comparison")
    plot_comparison(results, out_dir / "comparison.png")
    (out_dir / "models.json").write_text(json.dumps(models, indent=1))
    return rows
