"""What faults cost a run: the wall-clock gaps between iterations in its ``metrics.jsonl``.

    python -m pytest tests/e2e/test_faults.py --basetemp /tmp/faults    # the fault-injection runs
    python benchmarks/recovery.py /tmp/faults                           # their recovery times

For each run directory found under the given paths (a directory holding ``metrics.jsonl`` and
``prompts.jsonl``), prints the median iteration and every gap between two consecutive
iterations' ``time/finished_at`` more than 5 s longer than that median: the seconds a fault cost
beyond a normal iteration. Iterations redone after a restart replace the lost ones in ``metrics.jsonl``,
so a gap after a restart spans the lost iterations, the restart and the first redone one; the
number of iterations lost is read from the checkpoints (``checkpoint_*``) that existed before.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from rlaf_ray.run_log import read_metrics

# Jitter (a slow iteration, a checkpoint written) stays under this; a fault's recovery does not.
SLACK_S = 5.0


def gaps(run_dir: Path) -> tuple[float, list[tuple[int, float]]]:
    rows = read_metrics(run_dir)
    median = statistics.median(r["time/iteration"] for r in rows)
    slow = []
    for before, after in zip(rows, rows[1:]):
        lost = after["time/finished_at"] - before["time/finished_at"] - median
        if lost > SLACK_S:
            slow.append((after["iteration"], lost))
    return median, slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args()
    runs = sorted({p.parent for root in args.paths for p in root.rglob("prompts.jsonl")
                   if (p.parent / "metrics.jsonl").is_file()})
    for run_dir in runs:
        median, slow = gaps(run_dir)
        checkpoints = sorted(int(p.name.split("_")[1]) for p in run_dir.glob("checkpoint_[0-9]*"))
        print(f"{run_dir}: median iteration {median:.2f} s; checkpoints at {checkpoints}")
        for iteration, lost in slow:
            print(f"  before iteration {iteration}: {lost:.1f} s more than a normal iteration")


if __name__ == "__main__":
    main()
