"""Prompts per second through the Ray Data prompt pipeline, and the driver's peak memory.

    python benchmarks/data_pipeline.py [--rows 10000 100000] [--streaming-only]

For each size, writes a DialogSum-shaped JSONL file of that many rows, then runs the train
split's pipeline (read, template, length filter, seeded shuffle, tokenization with the tiny
policy's tokenizer) in a fresh driver process, consuming it batch by batch as a learner would.
Reports prompts/s and the driver's peak resident memory (ru_maxrss): it must not grow with the
file size. "streaming" re-runs the pipeline as it is consumed; "cached" is the default
(``data.cache_in_object_store``), which keeps the prepared split in Ray's object store.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_file(path: Path, rows: int) -> None:
    rng = random.Random(0)
    words = "hello meeting dinner train ticket report manager coffee office tomorrow please thanks".split()
    with path.open("w") as f:
        for i in range(rows):
            turns = [f"#Person{1 + t % 2}#: " + " ".join(rng.choices(words, k=rng.randint(6, 14))) + "."
                     for t in range(rng.randint(4, 10))]
            f.write(json.dumps({"id": f"b{i}", "dialogue": "\n".join(turns), "summary": "A talk.",
                                "topic": "talk"}) + "\n")


def measure(path: str, cache_dir: str, cached: bool) -> dict:
    """Runs in its own process, so that ru_maxrss is this pipeline's peak only."""
    import ray

    from rlaf_ray.config import DataSettings, ModelSettings
    from rlaf_ray.data import load_split
    from rlaf_ray.models.tiny import resolve_model

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    model = ModelSettings(name_or_path=resolve_model("tiny:llama", cache_dir), max_prompt_length=512)
    cfg = DataSettings(path=path, min_chars=200, max_chars=1000, cache_in_object_store=cached,
                     num_cpus_per_task=0.5)
    start = time.perf_counter()
    split = load_split(cfg, model)
    prompts = 0
    for batch in split.dataset.iter_batches(batch_size=256, batch_format="numpy"):
        prompts += len(batch["prompt"])
    seconds = time.perf_counter() - start
    ray.shutdown()
    return {"prompts": prompts, "seconds": round(seconds, 1), "prompts_per_s": round(prompts / seconds),
            "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--streaming-only", action="store_true")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        path, cache_dir, mode = args.measure
        print(json.dumps(measure(path, cache_dir, mode == "cached")))
        return
    modes = ["streaming"] if args.streaming_only else ["streaming", "cached"]
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"dialogsum_{rows}.jsonl"
            write_file(path, rows)
            size_mib = path.stat().st_size / 2**20
            for mode in modes:
                out = subprocess.run([sys.executable, __file__, "--measure", str(path), tmp + "/cache", mode],
                                     check=True, capture_output=True, text=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                print(f"rows={rows:>7} file={size_mib:6.1f} MiB {mode:>9}: {result}", flush=True)


if __name__ == "__main__":
    main()
