"""Benchmark the rollout and the PPO update of a TinyLlama-1.1B-sized policy on one GPU, without Ray.

    python benchmarks/gpu_roles.py [--batch 64] [--new-tokens 128] [--prompt-tokens 128] [key=value ...]

Builds a model with TinyLlama-1.1B's architecture (Llama, 22 layers, hidden 2048, 32 heads with
4 KV heads, vocabulary 32000) from its config with random weights and a made-up word-level
tokenizer (no hub), saves it as safetensors, then runs our role code on it, one role at a time
as separate actors would: ``RolloutWorker.generate`` (a batch of prompts, exactly ``--new-tokens``
each, with and without the behaviour log-probs that ``ppo.max_staleness`` needs) and
``PPOLearner.step`` (the recipe of ``jobs/configs/tinyllama_dialogsum.yaml``: bf16, LoRA r16 on
q/k/v/o, 2 epochs x 4 minibatches, detached critic) on the rollout's responses with random
scores. Prints generate tokens/s, update seconds and each role's peak GPU memory, and writes
them as JSON (``--out``). The GPU machine's image has torch, transformers, peft and accelerate
but not Ray, so nothing here imports Ray.

``--small`` builds a 2-layer model instead, to check the script on a CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from rlaf_ray.config import load_config
from rlaf_ray.models.policy import (
    eos_token_id,
    learner_model,
    load_tokenizer,
    trainable_parameters,
)
from rlaf_ray.ppo.batch import collate
from rlaf_ray.ppo.update import PPOLearner
from rlaf_ray.roles.rollout import RolloutWorker

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
# TinyLlama/TinyLlama-1.1B-Chat-v1.0's config.json.
TINYLLAMA = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                 num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                 rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
SMALL = dict(TINYLLAMA, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)


def build_model(out_dir: Path, sizes: dict, device: str) -> None:
    """Random weights of the given sizes, saved in bf16 safetensors with a word-level tokenizer."""
    vocab = {token: i for i, token in enumerate(SPECIALS + [f"w{i}" for i in range(sizes["vocab_size"] - len(SPECIALS))])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", model_max_length=sizes["max_position_embeddings"])
    config = LlamaConfig(**sizes, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    with torch.device(device):  # initializing 1.1B parameters is quick on a GPU, slow on a CPU
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=3)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model


def random_prompts(n: int, words: int, vocab_size: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(vocab_size - len(SPECIALS))}" for _ in range(words)) for _ in range(n)]


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def bench_rollout(cfg, prompts: list[str], repeats: int) -> tuple[dict, dict]:
    """Generate tokens/s with and without behaviour log-probs; the last batch, for the update."""
    reset_memory()
    worker = RolloutWorker(cfg.model, cfg.lora, cfg.generation)
    results = {}
    for logprobs in (False, True):
        worker.generate(prompts, seed=0, logprobs=logprobs)  # warm-up: kernels, allocator at full size
        seconds, tokens = [], 0
        for r in range(repeats):
            out = worker.generate(prompts, seed=r + 1, logprobs=logprobs)
            seconds.append(out["seconds"])
            tokens = sum(map(len, out["response_ids"]))
        key = "generate_with_logprobs" if logprobs else "generate"
        results[key] = {"seconds": statistics.median(seconds), "tokens": tokens,
                        "tokens_per_second": tokens / statistics.median(seconds)}
    results["rollout_peak_gib"] = peak_gib()
    del worker
    return results, out


def bench_update(cfg, out: dict, repeats: int) -> dict:
    """Seconds per PPO update (``PPOLearner.step``, as a learner rank runs it) and peak memory."""
    reset_memory()
    torch.manual_seed(cfg.ppo.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(cfg.model)
    inner = learner_model(cfg.model, cfg.lora, cfg.ppo.value_head, device)
    ppo = PPOLearner(cfg.ppo, inner, cfg.generation, eos_token_id(cfg.generation, tokenizer))
    batch = collate(out["prompt_ids"], out["response_ids"], tokenizer.pad_token_id, device,
                    inner.decoder_start_token_id)
    scores = torch.rand(len(out["response_ids"]), generator=torch.Generator().manual_seed(0))
    ended = torch.tensor(out["ended"])
    ppo.step(batch, scores, ended)  # warm-up
    seconds, metrics = [], {}
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        metrics = ppo.step(batch, scores, ended)
        synchronize()
        seconds.append(time.perf_counter() - start)
    trainable, total = trainable_parameters(inner)
    return {"update_seconds": statistics.median(seconds), "update_seconds_all": seconds,
            "epochs_run": metrics.get("ppo/epochs_run"), "learner_peak_gib": peak_gib(),
            "trainable_parameters": trainable, "total_parameters": total,
            "sequence_tokens": int(batch.inputs["attention_mask"].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/tinyllama_dialogsum.yaml")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="a 2-layer model, to check the script on a CPU")
    parser.add_argument("--out", type=Path, help="also write the results here, as JSON")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args()
    sizes = SMALL if args.small else TINYLLAMA
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as model_dir:
        start = time.perf_counter()
        build_model(Path(model_dir), sizes, device)
        build_seconds = time.perf_counter() - start
        n = args.new_tokens
        cfg = load_config(args.config, [
            f"model.name_or_path={model_dir}", f"model.max_prompt_length={args.prompt_tokens}",
            f"ppo.batch_size={args.batch}", f"generation.max_new_tokens={n}", f"generation.min_new_tokens={n}",
            *([] if torch.cuda.is_available() else ["model.dtype=fp32"]), *args.overrides])
        prompts = random_prompts(args.batch, args.prompt_tokens, sizes["vocab_size"])
        rollout, out = bench_rollout(cfg, prompts, args.repeats)
        update = bench_update(cfg, out, args.repeats)
    results = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "model": "small" if args.small else "TinyLlama-1.1B architecture",
        "dtype": cfg.model.dtype, "lora_r": cfg.lora.r, "lora_targets": list(cfg.lora.target_modules),
        "batch": args.batch, "prompt_tokens": args.prompt_tokens, "new_tokens": n,
        "ppo_epochs": cfg.ppo.ppo_epochs, "num_minibatches": cfg.ppo.num_minibatches,
        "build_seconds": build_seconds, **rollout, **update,
    }
    g, gl = results["generate"], results["generate_with_logprobs"]
    print(f"device: {results['device']} ({results['dtype']}, torch {results['torch']}), {results['model']}, "
          f"LoRA r{cfg.lora.r} on {'/'.join(cfg.lora.target_modules)}")
    print(f"rollout: batch {args.batch} x {n} new tokens after {args.prompt_tokens}-token prompts: "
          f"{g['tokens_per_second']:,.0f} tokens/s ({g['seconds']:.2f} s); with behaviour log-probs "
          f"{gl['tokens_per_second']:,.0f} tokens/s ({gl['seconds']:.2f} s); peak {results['rollout_peak_gib']} GiB")
    print(f"update: {results['update_seconds']:.2f} s per PPO update ({cfg.ppo.ppo_epochs} epochs x "
          f"{cfg.ppo.num_minibatches} minibatches, epochs run {results['epochs_run']}); "
          f"peak {results['learner_peak_gib']} GiB")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
