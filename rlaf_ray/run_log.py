"""Per-iteration records of a run: ``metrics.jsonl``, the prompt ledger ``prompts.jsonl``,
TensorBoard events and a console line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rlaf_ray.storage import RunStorage, write_text_atomic

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
    """Written by learner rank 0 into the run directory (its local mirror when ``run.output_dir``
    is a URI: each iteration's files are pushed after it)."""

    def __init__(self, storage: RunStorage, total_iterations: int, resume_from: int = 0):
        self.storage = storage
        run_dir = storage.local
        self.path = run_dir / "metrics.jsonl"
        # Which prompts each iteration trained (a digest per prompt, per rank): a resumed or
        # restarted run shows that no prompt was trained twice or skipped.
        self.ledger = run_dir / "prompts.jsonl"
        self.total = total_iterations
        self.seconds: list[float] = []  # per iteration, for the ETA
        run_dir.mkdir(parents=True, exist_ok=True)
        storage.pull(self.path.name, self.ledger.name)  # a resumed run's earlier lines, wherever it ran
        for path in (self.path, self.ledger):
            truncate_after(path, resume_from)
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # TensorBoard output is optional
            self.tb = None

    def write(self, iteration: int, metrics: dict[str, float], prompts: list[list[str]] | None = None) -> None:
        """``prompts``: the digests of the prompts each rank trained in this iteration."""
        with self.path.open("a") as f:
            f.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
        if prompts is not None:
            with self.ledger.open("a") as f:
                f.write(json.dumps({"iteration": iteration, "prompts": prompts}) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, iteration)
            self.tb.flush()
        self.storage.push(self.path.name, self.ledger.name, "tensorboard")
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


def truncate_after(path: Path, iteration: int) -> None:
    """A resumed run redoes the iterations after its checkpoint: drop their old lines."""
    if not path.exists():
        return
    kept = [json.dumps(record) for record in parse_lines(path.read_text()) if record.get("iteration", 0) <= iteration]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def parse_lines(text: str) -> list[dict]:
    """The records of a ``metrics.jsonl``; a torn last line (the process died while appending it)
    is left out, not a crash of every later reader."""
    records = []
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                break  # torn while written: that iteration is redone from its checkpoint
            raise
    return records


def read_metrics(run_dir: str | Path) -> list[dict]:
    return parse_lines((Path(run_dir) / "metrics.jsonl").read_text())


def read_ledger(run_dir: str | Path) -> list[dict]:
    """``prompts.jsonl``: ``{"iteration", "prompts": [digests of rank 0, of rank 1, ...]}`` per line."""
    return parse_lines((Path(run_dir) / "prompts.jsonl").read_text())
