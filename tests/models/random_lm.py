"""A tiny random causal or seq2seq LM with a LoRA adapter, built from a config in memory (no
tokenizer, no files), and sampling from it as the rollout does (generate's processed scores kept)."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from rlaf_ray.config import GenerationSettings
from rlaf_ray.models.policy import generated_tokens
from rlaf_ray.roles.rollout import hf_generation_config

PAD, BOS, EOS, VOCAB = 0, 1, 2, 48
MAX_NEW = 8


def tiny_policy(seq2seq: bool):
    """A random tiny LM with a fresh LoRA adapter; its output layer scaled up so that logits
    spread out and top-k, top-p and the repetition penalty all change the distribution."""
    torch.manual_seed(0)
    if seq2seq:
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0,
            pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD, tie_word_embeddings=False))
        targets, scale = ["q", "v"], 0.6  # T5's untied output layer starts with std 1
    else:
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD, bos_token_id=BOS,
            eos_token_id=EOS, tie_word_embeddings=False))
        targets, scale = ["q_proj", "v_proj"], 40.0
    with torch.no_grad():  # logits with a standard deviation of about 4
        model.lm_head.weight.mul_(scale)
        favour_eos(model, seq2seq)
    task = "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type=task)).eval()


def favour_eos(model, seq2seq: bool) -> None:
    """Point EOS's output row along the mean final hidden state, so that some responses end (and
    the batch holds right-padded responses)."""
    ids = torch.randint(3, VOCAB, (4, 12), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, output_hidden_states=True, **({"decoder_input_ids": ids} if seq2seq else {}))
    mean = (out.decoder_hidden_states if seq2seq else out.hidden_states)[-1].mean(dim=(0, 1))
    model.lm_head.weight[EOS] = 7.0 * mean / mean.norm() ** 2


def left_padded(prompts: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        span = slice(width - len(p), width) if side == "left" else slice(0, len(p))
        ids[i, span], mask[i, span] = torch.tensor(p), 1
    return ids, mask


def sample(policy, g: GenerationSettings, seq2seq: bool, seed: int = 0):
    """Prompts of different lengths (so left padding is present), sampled as the rollout does;
    returns the unpadded prompts, responses cut after EOS, and generate's processed scores."""
    rng = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, VOCAB, (n,), generator=rng).tolist() for n in (6, 3, 9, 5, 4, 7)]
    ids, mask = left_padded(prompts, "right" if seq2seq else "left")
    gen_cfg = hf_generation_config(g, MAX_NEW, EOS, PAD)
    gen_cfg.output_scores, gen_cfg.return_dict_in_generate = True, True
    torch.manual_seed(seed)
    with torch.no_grad():
        out = policy.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)
    tokens = generated_tokens(out.sequences, ids.shape[1], seq2seq).tolist()
    responses = [t[: t.index(EOS) + 1] if EOS in t else t for t in tokens]
    return prompts, responses, torch.stack(out.scores, dim=1)
