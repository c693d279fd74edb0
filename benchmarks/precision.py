"""Benchmark the base precisions: rollout throughput, learner step time and memory per dtype.

    python benchmarks/precision.py [--dtypes fp32 bf16 8bit 4bit] [--size tiny|small] [--batch 8]

Each dtype runs in its own process (so peak resident memory is its own): a RolloutWorker and a
PPO learner built exactly as the roles build them, on this machine's device (CPU here). ``tiny``
is the offline ``tiny:llama``; ``small`` a random Llama of about 60M parameters built from a
config with the same tokenizer, big enough for the weight memory to dominate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ["#Person1#: Hello, how are you? I was hoping we could talk about the project report.",
           "Summarize the following conversation. #Person1#: The train is late again.",
           "#Person2#: I want to book a table for dinner tomorrow, please.",
           "#Person1#: Thanks for the coffee, see you at the meeting."]


def build_small(tiny_path: str, out: Path) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                         num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def measure_one(path: str, dtype: str, batch: int, repeats: int, compute_dtype: str) -> dict:
    import resource

    import torch
    from trl.trainer.utils import disable_dropout_in_model

    from rlaf_ray.config import from_dict
    from rlaf_ray.models.policy import (
        PolicyWithValueHead,
        load_policy,
        trainable_parameters,
    )
    from rlaf_ray.ppo.batch import collate
    from rlaf_ray.ppo.update import PPOLearner
    from rlaf_ray.roles.rollout import RolloutWorker

    cfg = from_dict({"model": {"name_or_path": path, "dtype": dtype, "bnb_4bit_compute_dtype": compute_dtype},
                     "lora": {"target_modules": ["q_proj", "v_proj"], "dropout": 0.0},
                     "generation": {"max_new_tokens": 16, "min_new_tokens": 16},
                     "ppo": {"batch_size": batch, "num_minibatches": 2, "ppo_epochs": 2},
                     "resources": {"learner": {"num_workers": 1}}})
    prompts = (PROMPTS * batch)[:batch]
    worker = RolloutWorker(cfg.model, cfg.lora, cfg.generation)
    rollout_weights = worker.model.get_memory_footprint()
    worker.generate(prompts, seed=0)  # warm-up
    gen = []
    for i in range(repeats):
        start = time.perf_counter()
        out = worker.generate(prompts, seed=i + 1)
        gen.append(time.perf_counter() - start)
    tokens = sum(len(r) for r in out["response_ids"])

    policy = load_policy(cfg.model, cfg.lora, for_training=True)
    disable_dropout_in_model(policy)
    model = PolicyWithValueHead(policy)
    learner = PPOLearner(cfg.ppo, model, cfg.generation, worker.eos_token_id)
    rollout_batch = collate(out["prompt_ids"], out["response_ids"], worker.tokenizer.pad_token_id)
    scores = torch.linspace(-1, 1, batch)
    learner.step(rollout_batch, scores, torch.tensor(out["ended"]))  # warm-up
    steps = []
    for _ in range(repeats):
        start = time.perf_counter()
        learner.step(rollout_batch, scores, torch.tensor(out["ended"]))
        steps.append(time.perf_counter() - start)
    trainable, total = trainable_parameters(model)
    return {"dtype": dtype, "parameters": total, "trainable": trainable,
            "weights_mib": rollout_weights / 2**20,
            "rollout_tokens_per_s": tokens / statistics.median(gen),
            "learner_step_s": statistics.median(steps),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16", "8bit", "4bit"])
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    # CPUs without bf16 matrix units run bf16 slowly: fp32 compute isolates the cost of 4-bit weights.
    parser.add_argument("--compute-dtype", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="model.bnb_4bit_compute_dtype for the 4bit row")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one dtype of --path
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.path, args.one, args.batch, args.repeats, args.compute_dtype)))
        return

    from rlaf_ray.models.tiny import resolve_model

    with tempfile.TemporaryDirectory() as scratch:
        path = resolve_model("tiny:llama", Path(scratch) / "cache")
        if args.size == "small":
            path = build_small(path, Path(scratch) / "small")
        rows = []
        for dtype in args.dtypes:
            done = subprocess.run([sys.executable, __file__, "--one", dtype, "--path", path, "--batch",
                                   str(args.batch), "--repeats", str(args.repeats),
                                   "--compute-dtype", args.compute_dtype],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"model: {args.size} ({rows[0]['parameters']:,} parameters), batch {args.batch}, "
          f"16 new tokens, median of {args.repeats}, 4bit compute {args.compute_dtype}")
    print(f"{'dtype':6s} {'weights MiB':>12s} {'rollout tok/s':>14s} {'learner step s':>15s} {'peak RSS MiB':>13s}")
    for r in rows:
        print(f"{r['dtype']:6s} {r['weights_mib']:12.1f} {r['rollout_tokens_per_s']:14.1f} "
              f"{r['learner_step_s']:15.3f} {r['peak_rss_mib']:13.0f}")


if __name__ == "__main__":
    main()
