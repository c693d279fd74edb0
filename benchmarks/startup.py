"""Benchmark what a run costs besides training: start-up to the first iteration, and the end.

    python benchmarks/startup.py [--repeats 3] [key=value ...]

Runs ``rlaf-ray train`` as a user does (a new process, its own local Ray) on
``jobs/configs/offline_tiny.yaml`` with 2 iterations and no report, ``--repeats`` times, and
prints the median of:

- to first iteration: from the command's start to the end of iteration 1 (``time/finished_at``
  in ``metrics.jsonl``), less that iteration's own time: imports, Ray, the prompt pipeline, the
  role actors and the learner group starting, the models loading;
- iterations: the two iterations' own time;
- after the last: from the end of the last iteration to the command's exit (the final adapter,
  the learner group and Ray shutting down).

On 2 cores each of these is mostly processes starting and importing torch, transformers and peft
(~7 s of one core each: ``python -X importtime -c "import torch, transformers, peft"``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlaf_ray.run_log import read_metrics


def one_run(config: str, overrides: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "rlaf_ray", "train", "--config", config, "ppo.num_iterations=2",
                   "evaluation.after_train=false", f"run.output_dir={out}", "run.name=startup", *overrides]
        started = time.time()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        ended = time.time()
        rows = read_metrics(Path(out) / "startup")
    first, last = rows[0], rows[-1]
    return {"to first iteration": first["time/finished_at"] - first["time/iteration"] - started,
            "iterations": sum(r["time/iteration"] for r in rows),
            "after the last": ended - last["time/finished_at"],
            "whole command": ended - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/offline_tiny.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeats):
        runs.append(one_run(args.config, args.overrides))
        print("  ".join(f"{k} {v:.1f} s" for k, v in runs[-1].items()), flush=True)
    print(f"median of {args.repeats} runs:")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"  {key:<20} {statistics.median(values):6.1f} s  (min {min(values):.1f}, max {max(values):.1f})")


if __name__ == "__main__":
    main()
