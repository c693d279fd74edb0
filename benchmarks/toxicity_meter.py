"""Prompts per second of the toxicity meter on the tiny models, with 1 and 2 workers per actor
pool, and the share of time in generation vs scoring.

    python benchmarks/toxicity_meter.py [--prompts 40] [--samples 25] [--actors 1 2]

Uses the offline detox world (jobs/configs/offline_tiny.yaml, test split) with the protocol's
sampling (k samples per prompt, top_p 0.9, up to 20 new tokens) on a local Ray instance.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import ray

from rlaf_ray.config import load_config
from rlaf_ray.evaluation.meter import measure
from rlaf_ray.preflight import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/offline_tiny.yaml")
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as out:
        for actors in args.actors:
            cfg = load_config(args.config, [
                f"evaluation.max_prompts={args.prompts}", f"evaluation.samples_per_prompt={args.samples}",
                "evaluation.max_new_tokens=20", "evaluation.min_new_tokens=0",
                f"evaluation.generator_actors={actors}", f"evaluation.scorer_actors={actors}",
                f"run.output_dir={out}"])
            cfg = prepare(cfg, (cfg.evaluation.split,), evaluation=True)
            measure(cfg, None, Path(out) / f"warmup{actors}")  # actor start-up and caches
            m = measure(cfg, None, Path(out) / f"actors{actors}").metrics
            print(f"actors per pool={actors}: {m['prompts_per_second']:.2f} prompts/s "
                  f"({m['prompts_per_second'] * args.samples:.1f} samples/s), wall {m['seconds']:.1f}s; "
                  f"time share generate {m['time_share/generate']:.0%}, toxicity {m['time_share/toxicity']:.0%}, "
                  f"perplexity {m['time_share/perplexity']:.0%}", flush=True)


if __name__ == "__main__":
    main()
