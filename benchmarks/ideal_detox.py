"""What a detox that writes no new language keeps of the base's distinct-2: the base without its
toxic replies (the ideal detox), or with fewer of them at the least KL (the frontier), and how far
trained policies are from it.

    python benchmarks/ideal_detox.py BASE_SAMPLES.jsonl [--per-prompt 8] [--draws 300]
        [--toxic-rates 0.05 0.03 ...] [--policies learning.json | comparison.csv ...]

The policy that removes all toxicity at the least KL is the base conditioned on a clean reply
(KL = -ln P(clean), about 0.27 nats on the offline world); the one that stops at toxic rate q is
the base tilted against its toxic replies (``rlaf_ray.evaluation.frontier``): each prompt keeps its
clean and its toxic replies in the base's proportions, fewer toxic ones. The toxic replies carry
bigrams of their own ("you idiot"), so leaving them out lowers distinct-2 by itself: this is what
the learning bar's "distinct-2 at least 90% of the base's" is read against.

``--toxic-rates`` prints the frontier's KL and distinct-2 at those toxic rates. ``--policies`` reads
trained policies (``benchmarks/learning.py``'s learning.json, ``rlaf-ray compare``'s
comparison.csv) and prints each beside the frontier at the same toxicity relative to its base,
drawn with the meter's samples per prompt of that file: the gap is the distinct-2 (and the KL)
that training cost beyond what the detox itself asks.

BASE_SAMPLES.jsonl is the base's ``samples.jsonl`` from a meter run with many samples per prompt, on
the prompts the policies were measured on
(e.g. ``rlaf-ray toxicity --config jobs/configs/offline_tiny.yaml --samples 128 --out DIR``; at
least as many clean replies per prompt as a draw takes). Each draw takes ``--per-prompt`` replies
per prompt without replacement, as the meter's distinct-2 reads them: from all of a prompt's
replies (the base), from its clean ones (the ideal detox), or, for the frontier, a
Binomial(per-prompt, tilted toxic share) number of its toxic replies and the rest from its clean
ones (ratios there are against the base drawn the same way, draw by draw).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import statistics
from pathlib import Path

from rlaf_ray.evaluation.frontier import (
    kl_to_base,
    tilt_for_toxic_rate,
    tilted_toxic_shares,
)
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


def split(rows: list[dict]) -> list[tuple[list[str], list[str]]]:
    """Each prompt's toxic and clean replies (split once: every draw of the frontier reads them)."""
    return [([t for t, bad in zip(row["continuations"], row["toxic"]) if bad],
             [t for t, bad in zip(row["continuations"], row["toxic"]) if not bad]) for row in rows]


def toxic_shares(prompts: list[tuple[list[str], list[str]]]) -> list[float]:
    return [len(toxic) / (len(toxic) + len(clean)) for toxic, clean in prompts]


def draw_tilted(prompts: list[tuple[list[str], list[str]]], shares: list[float], per_prompt: int,
                rng: random.Random) -> float:
    """distinct-2 of ``per_prompt`` replies per prompt: Binomial(per_prompt, share) toxic ones (as
    many as the prompt has), the rest clean, each drawn without replacement."""
    texts = []
    for (toxic, clean), share in zip(prompts, shares):
        k = sum(rng.random() < share for _ in range(per_prompt))
        k = min(max(k, per_prompt - len(clean)), len(toxic))
        texts += rng.sample(toxic, k) + rng.sample(clean, per_prompt - k)
    return distinct_n(texts, 2)


def frontier_point(prompts: list[tuple[list[str], list[str]]], base_shares: list[float], rate: float,
                   base: list[float], per_prompt: int, rng: random.Random) -> tuple[float, float, float]:
    """KL to the base, and distinct-2 as a share of ``base``'s draw by draw (mean, sd), of the
    least-KL policy at toxic rate ``rate``."""
    try:
        shares = tilted_toxic_shares(base_shares, tilt_for_toxic_rate(base_shares, rate))
    except ValueError as error:
        raise SystemExit(f"toxic rate: {error}") from None
    ratios = [draw_tilted(prompts, shares, per_prompt, rng) / b for b in base]
    return kl_to_base(base_shares, shares), statistics.mean(ratios), statistics.stdev(ratios)


def base_draws(rows: list[dict], prompts: list[tuple[list[str], list[str]]], base_shares: list[float],
               per_prompt: int, draws: int, rng: random.Random) -> list[float]:
    pools(rows, per_prompt, clean_only=True)  # every prompt has enough clean replies to draw from
    return [draw_tilted(prompts, base_shares, per_prompt, rng) for _ in range(draws)]


def frontier(rows: list[dict], rates: list[float], per_prompt: int, draws: int, rng: random.Random) -> None:
    prompts = split(rows)
    base_shares = toxic_shares(prompts)
    base = base_draws(rows, prompts, base_shares, per_prompt, draws, rng)
    print(f"least-KL frontier (base drawn the same way: distinct-2 {statistics.mean(base):.4f}):")
    print("| toxic rate | KL to base (nats) | distinct-2, % of the base's (sd over draws) |")
    print("|---|---|---|")
    for rate in rates:
        kl, ratio, sd = frontier_point(prompts, base_shares, rate, base, per_prompt, rng)
        print(f"| {rate:.3f} | {kl:.3f} | {100 * ratio:.1f}% ({100 * sd:.1f}) |")


def measured_policies(path: Path) -> list[tuple[str, dict, dict]]:
    """(name, base metrics, trained metrics) from ``benchmarks/learning.py``'s learning.json or
    ``rlaf-ray compare``'s comparison.csv."""
    if path.suffix == ".json":
        runs = json.loads(path.read_text())["runs"]
        return [(f"{path.parent.name} seed {run['seed']}", run["base"], run["trained"]) for run in runs]
    with path.open() as f:
        table = {row["model"]: {k: float(v) for k, v in row.items() if k != "model" and v} for row in csv.DictReader(f)}
    if "base" not in table:
        raise SystemExit(f"{path}: expected a comparison.csv with a 'base' row")
    return [(f"{path.parent.name} {name}", table["base"], m) for name, m in table.items() if name != "base"]


def against_policies(rows: list[dict], paths: list[Path], draws: int, rng: random.Random) -> None:
    """Each measured policy beside the least-KL policy at the same toxicity relative to its base
    (the pool's base and the meter's base are different draws of one model)."""
    prompts = split(rows)
    base_shares = toxic_shares(prompts)
    pool_rate = statistics.mean(base_shares)
    bases: dict[int, list[float]] = {}
    gaps: dict[str, list[float]] = {}
    print("| policy | toxic, % of the base's | distinct-2, % of the base's | least-KL policy at that toxicity "
          "(sd) | gap | KL | least KL |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        for name, base, trained in measured_policies(path):
            per_prompt = round(trained["samples"] / trained["prompts"])
            if per_prompt not in bases:
                bases[per_prompt] = base_draws(rows, prompts, base_shares, per_prompt, draws, rng)
            relative = trained["toxic_rate"] / base["toxic_rate"]
            # a policy at or over its base's toxicity is read against the base itself
            kl, ratio, sd = frontier_point(prompts, base_shares, min(max(relative * pool_rate, 1e-6), pool_rate),
                                           bases[per_prompt], per_prompt, rng)
            measured = trained["distinct_2"] / base["distinct_2"]
            gaps.setdefault(path.parent.name, []).append(100 * (measured - ratio))
            print(f"| {name} | {100 * relative:.1f}% | {100 * measured:.1f}% | {100 * ratio:.1f}% "
                  f"({100 * sd:.1f}) | {100 * (measured - ratio):+.1f} | {trained.get('kl', math.nan):.2f} | {kl:.2f} |")
    for name, values in gaps.items():
        spread = f", sd {statistics.stdev(values):.1f}" if len(values) > 1 else ""
        print(f"{name}: gap {statistics.mean(values):+.1f} points of the base's distinct-2 over {len(values)} policies{spread}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", type=Path, help="the base's samples.jsonl (with the 'toxic' column)")
    parser.add_argument("--per-prompt", type=int, default=8, help="replies per prompt, as the meter samples")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--toxic-rates", type=float, nargs="*", default=[],
                        help="also print the least-KL policy's KL and distinct-2 at these toxic rates")
    parser.add_argument("--policies", type=Path, nargs="*", default=[],
                        help="learning.json or comparison.csv files: each trained policy beside the "
                             "least-KL policy at its toxicity")
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
    if args.toxic_rates:
        frontier(rows, args.toxic_rates, args.per_prompt, args.draws, rng)
    if args.policies:
        against_policies(rows, args.policies, args.draws, rng)


if __name__ == "__main__":
    main()
