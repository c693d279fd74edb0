"""Does overlapping rollouts with learning pay? The offline demo's loop (same data, models, batch
and seed) with ``ppo.max_staleness`` 0 (synchronous) and 1 (one-step-off), or any others given.

    python benchmarks/overlap.py [--staleness 0 1] [--iterations 12] [--out DIR] [key=value ...]

Per setting: samples per second and the median seconds per iteration over the iterations after
the first two (start-up excluded), with the phases of the synchronous loop: generate + score
(``time/rollout_wall``, what a learner waits for) and learn. The limit of perfect overlap is
max(generate + score, learn) per iteration; the ratio to it is printed. Results go to
``<out>/overlap.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path


def run(config: str, staleness: int, iterations: int, out: Path, overrides: list[str]) -> dict:
    from rlaf_ray.config import load_config
    from rlaf_ray.run_log import read_metrics
    from rlaf_ray.train import train

    cfg = load_config(config, [*overrides, f"ppo.max_staleness={staleness}", f"ppo.num_iterations={iterations}",
                               f"run.name=overlap-s{staleness}", f"run.output_dir={out}",
                               "evaluation.after_train=false", f"run.checkpoint_every={iterations}"])
    metrics = read_metrics(train(cfg))[2:]  # the first iterations pay for start-up

    def median(key: str) -> float:
        return statistics.median(m[key] for m in metrics)

    return {"staleness": staleness, "iteration_s": median("time/iteration"),
            "samples_per_s": cfg.ppo.batch_size / median("time/iteration"),
            "rollout_wall_s": median("time/rollout_wall"), "learn_s": median("time/learn"),
            "sync_s": median("time/sync"), "staleness_max": max(m["offpolicy/staleness_max"] for m in metrics),
            "is_weight_mean": statistics.mean(m["offpolicy/is_weight_mean"] for m in metrics)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="jobs/configs/offline_tiny.yaml")
    parser.add_argument("--staleness", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="rlaf-overlap-"))
    rows = [run(args.config, s, args.iterations, out, args.overrides) for s in args.staleness]
    sync = next((r for r in rows if r["staleness"] == 0), None)
    print(f"{'max_staleness':>13s} {'samples/s':>10s} {'iteration s':>12s} {'rollout wait s':>15s} {'learn s':>8s} "
          f"{'sync s':>7s} {'x sync':>7s} {'x limit':>8s} {'IS weight':>10s}")
    for r in rows:
        speedup = r["samples_per_s"] / sync["samples_per_s"] if sync else float("nan")
        limit = max(sync["rollout_wall_s"], sync["learn_s"]) if sync else float("nan")
        print(f"{r['staleness']:13d} {r['samples_per_s']:10.2f} {r['iteration_s']:12.3f} {r['rollout_wall_s']:15.3f} "
              f"{r['learn_s']:8.3f} {r['sync_s']:7.3f} {speedup:7.2f} {r['iteration_s'] / limit:8.2f} "
              f"{r['is_weight_mean']:10.4f}")
    if sync:
        perfect = (sync["rollout_wall_s"] + sync["learn_s"] + sync["sync_s"]) / max(sync["rollout_wall_s"], sync["learn_s"])
        print(f"perfect overlap of the synchronous phases would give {perfect:.2f}x")
    (out / "overlap.json").write_text(json.dumps(rows, indent=1))
    print(f"results: {out / 'overlap.json'}")


if __name__ == "__main__":
    main()
