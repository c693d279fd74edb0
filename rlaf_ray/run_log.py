"""Per-iteration metrics of a run: ``metrics.jsonl``, TensorBoard events and a console line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

CONSOLE_KEYS = (
    ("reward/mean", "reward {:+.3f}"),
    ("reward/std", "± {:.3f}"),
    ("kl/mean", "kl {:.3f}"),
    ("ppo/policy_loss", "pg {:+.3f}"),
    ("ppo/value_loss", "vf {:.3f}"),
    ("response/length_mean", "len {:.1f}"),
    ("perf/samples_per_second", "{:.2f} samples/s"),
)


class RunLog:
    def __init__(self, run_dir: Path, total_iterations: int, resume_from: int = 0):
        self.path = run_dir / "metrics.jsonl"
        self.total = total_iterations
        self.seconds: list[float] = []  # per iteration, for the ETA
        run_dir.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_from)
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # TensorBoard output is optional
            self.tb = None

    def _truncate_after(self, iteration: int) -> None:
        """A resumed run redoes the iterations after its checkpoint: drop their old lines."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("iteration", 0) <= iteration]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, iteration: int, metrics: dict[str, float]) -> None:
        record = {"iteration": iteration, **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, iteration)
            self.tb.flush()
        parts = [fmt.format(metrics[k]) for k, fmt in CONSOLE_KEYS if k in metrics]
        if "time/iteration" in metrics:
            self.seconds.append(metrics["time/iteration"])
            left = (self.total - iteration) * sum(self.seconds) / len(self.seconds)
            parts.append(f"ETA {int(left // 60)}:{int(left % 60):02d}")
        # sys.__stdout__: under Ray Train, print() to sys.stdout is also copied into a logger,
        # and the line would reach the console twice.
        print(f"[rlaf] iter {iteration}/{self.total} " + "  ".join(parts), file=sys.__stdout__, flush=True)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
