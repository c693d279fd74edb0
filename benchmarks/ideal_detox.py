"""What the ideal detox scores on distinct-2: the base's own replies with the toxic ones left out.

    python benchmarks/ideal_detox.py BASE_SAMPLES.jsonl [--per-prompt 8] [--draws 300]

The policy that removes toxicity at the least KL is the base conditioned on a clean reply
(KL = -ln P(clean), about 0.3 nats on the offline world). Its distinct-2 is the most a detoxed
policy can keep without writing new language, so it calibrates the learning bar's "distinct-2 at
least 90% of the base's": the toxic replies carry bigrams of their own ("you idiot"), and leaving
them out lowers distinct-2 by itself.

BASE_SAMPLES.jsonl is the base's ``samples.jsonl`` from a meter run with many samples per prompt
(e.g. ``rlaf-ray compare --runs <run> --out DIR evaluation.samples_per_prompt=32``, then
``DIR/base/samples.jsonl``). Each draw takes ``--per-prompt`` replies per prompt without
replacement, from all of a prompt's replies (the base) and from its clean ones (the ideal
detox), as the meter's distinct-2 reads them; prints the mean of each over the draws and their
ratio.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from pathlib import Path

from rlaf_ray.evaluation.metrics import distinct_n
from rlaf_ray.run_log import parse_lines


def pools(rows: list[dict], per_prompt: int, clean_only: bool) -> list[list[str]]:
    """Each prompt's replies to draw from: all of them, or the clean ones."""
    out = []
    for row in rows:
        pool = [t for t, toxic in zip(row["continuations"], row["toxic"]) if not (clean_only and toxic)]
        if len(pool) < per_prompt:
            raise SystemExit(f"prompt {row['id']!r}: {len(pool)} replies to draw {per_prompt} from; "
                             "measure more samples per prompt")
        out.append(pool)
    return out


def draw(prompt_pools: list[list[str]], per_prompt: int, rng: random.Random) -> float:
    """distinct-2 of ``per_prompt`` replies per prompt, drawn without replacement."""
    return distinct_n([t for pool in prompt_pools for t in rng.sample(pool, per_prompt)], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", type=Path, help="the base's samples.jsonl (with the 'toxic' column)")
    parser.add_argument("--per-prompt", type=int, default=8, help="replies per prompt, as the meter samples")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = parse_lines(args.samples.read_text())
    if not rows or "toxic" not in rows[0]:
        raise SystemExit(f"{args.samples}: expected a meter's samples.jsonl with a 'toxic' column")
    rng = random.Random(args.seed)
    everything, clean_only = (pools(rows, args.per_prompt, clean) for clean in (False, True))
    base = [draw(everything, args.per_prompt, rng) for _ in range(args.draws)]
    ideal = [draw(clean_only, args.per_prompt, rng) for _ in range(args.draws)]
    ratios = [i / b for i, b in zip(ideal, base)]
    clean = sum(not t for row in rows for t in row["toxic"]) / sum(len(row["toxic"]) for row in rows)
    print(f"{len(rows)} prompts, {args.per_prompt} replies per prompt, {args.draws} draws; "
          f"clean share {clean:.3f} (ideal detox KL {-math.log(clean):.2f} nats)")
    print(f"distinct-2: base {statistics.mean(base):.4f}, ideal detox {statistics.mean(ideal):.4f}, "
          f"ratio {statistics.mean(ratios):.3f} (sd {statistics.stdev(ratios):.3f} over draws)")


if __name__ == "__main__":
    main()
