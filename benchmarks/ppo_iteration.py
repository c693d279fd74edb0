"""Benchmark a whole PPO iteration on the offline default: samples/s and the share of each phase.

    python benchmarks/ppo_iteration.py [--iterations 12] [key=value ...]

Runs ``rlaf-ray train`` on ``jobs/configs/offline_tiny.yaml`` (tiny models, local Ray), then
summarizes ``metrics.jsonl``, skipping the first iterations (actor warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from rlaf_ray.config import load_config
from rlaf_ray.run_log import read_metrics
from rlaf_ray.train import train

PHASES = ("time/generate", "time/score", "time/learn", "time/sync")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/offline_tiny.yaml")
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(args.config, [f"ppo.num_iterations={args.iterations}", f"run.output_dir={out}",
                                        "run.name=bench", *args.overrides])
        run_dir = train(cfg)
        rows = read_metrics(run_dir)[args.warmup:]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    total = median("time/iteration")
    print(f"iterations measured: {len(rows)} (after {args.warmup} warm-up)")
    print(f"global batch: {cfg.ppo.batch_size} prompts, learners: {cfg.resources.learner.num_workers}")
    print(f"median seconds per iteration: {total:.3f}")
    print(f"median samples per second: {median('perf/samples_per_second'):.2f}")
    print(f"median response length: {median('response/length_mean'):.1f} tokens")
    for phase in PHASES:
        seconds = median(phase)
        print(f"  {phase:<16} {seconds:7.3f} s  {100 * seconds / total:5.1f}% of the iteration")
    rollout_wall = median("time/rollout_wall")
    print(f"  {'rollout wall':<16} {rollout_wall:7.3f} s  (generate + score + transfers, as seen by a learner)")


if __name__ == "__main__":
    main()
