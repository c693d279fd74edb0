"""Rollout role: the base policy plus the current LoRA adapter, generating in one batched call."""

from __future__ import annotations

import random
import time
from typing import Sequence

import torch
from transformers import GenerationConfig

from rlaf_ray.config import GenerationSettings, LoraSettings, ModelSettings
from rlaf_ray.determinism import use_deterministic_algorithms
from rlaf_ray.devices import default_device, peak_memory_mib
from rlaf_ray.models.policy import (
    cut_at_eos,
    encode_prompts,
    eos_token_id,
    generated_tokens,
    is_seq2seq,
    load_adapter_state,
    load_policy,
    load_tokenizer,
)
from rlaf_ray.roles.actor import RoleActor


def sample_max_new_tokens(setting: int | list[int], seed: int) -> int:
    """A fixed length, or one drawn from ``[low, high]`` per batch (what TRL's LengthSampler did)."""
    if isinstance(setting, int):
        return setting
    low, high = setting
    return random.Random(seed).randint(low, high)


def hf_generation_config(g: GenerationSettings, max_new_tokens: int, eos_token_id: int,
                         pad_token_id: int) -> GenerationConfig:
    # A complete config of our own: the model's saved defaults (e.g. top_k=50) must not leak in,
    # since the learner's log-probs assume exactly these sampling settings.
    return GenerationConfig(
        do_sample=True, max_new_tokens=max_new_tokens, min_new_tokens=g.min_new_tokens,
        temperature=g.temperature, top_k=g.top_k, top_p=g.top_p,
        repetition_penalty=g.repetition_penalty, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )


class RolloutWorker(RoleActor):
    def __init__(self, model: ModelSettings, lora: LoraSettings, generation: GenerationSettings,
                 worker_index: int = 0, deterministic: bool = False):
        use_deterministic_algorithms(deterministic)  # run.deterministic, before any model loads
        self.model_settings, self.generation = model, generation
        self.worker_index = worker_index
        self.device = default_device()
        self.tokenizer = load_tokenizer(model)
        self.seq2seq = is_seq2seq(model)
        self.model = load_policy(model, lora, self.device).eval()
        self.eos_token_id = eos_token_id(generation, self.tokenizer)
        # Version of the adapter in use: 0 is the untrained adapter, then one per PPO update.
        self.version = 0

    def load_adapter(self, state: dict[str, torch.Tensor], version: int) -> int:
        load_adapter_state(self.model, state)
        self.version = version
        return version

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seed: int, logprobs: bool = False) -> dict:
        """Sample one response per prompt. Returns ids, text and the adapter version used; with
        ``logprobs``, each response token's log-probability under the distribution it was drawn
        from (``generate``'s processed scores: temperature, top-k, top-p, penalties applied), the
        behaviour policy of an off-policy correction."""
        start = time.perf_counter()
        max_new_tokens = sample_max_new_tokens(self.generation.max_new_tokens, seed)
        enc = encode_prompts(self.tokenizer, prompts, self.model_settings, self.device)
        gen_cfg = hf_generation_config(self.generation, max_new_tokens, self.eos_token_id,
                                       self.tokenizer.pad_token_id)
        torch.manual_seed(seed)
        output = self.model.generate(**enc, generation_config=gen_cfg, output_scores=logprobs,
                                     return_dict_in_generate=True)
        new_tokens = generated_tokens(output.sequences, enc["input_ids"].shape[1], self.seq2seq)
        token_logprobs = None
        if logprobs:
            steps = torch.stack(output.scores, dim=1).float().log_softmax(dim=-1)  # [batch, new, vocab]
            token_logprobs = steps.gather(-1, new_tokens[:, :steps.shape[1], None].to(steps.device)).squeeze(-1)
        prompt_ids, response_ids, ended, behaviour = [], [], [], []
        for i, (row, mask, generated) in enumerate(zip(enc["input_ids"], enc["attention_mask"], new_tokens)):
            prompt_ids.append(row[mask.bool()].tolist())
            tokens, stopped = cut_at_eos(generated.tolist(), self.eos_token_id)
            response_ids.append(tokens)
            ended.append(stopped)
            if token_logprobs is not None:
                behaviour.append(token_logprobs[i, :len(tokens)].tolist())
        return {
            "prompts": list(prompts),
            "prompt_ids": prompt_ids,
            "response_ids": response_ids,
            "responses": self.tokenizer.batch_decode(response_ids, skip_special_tokens=True),
            "ended": ended,
            "version": self.version,
            "logprobs": behaviour if logprobs else None,
            "max_new_tokens": max_new_tokens,
            "seconds": time.perf_counter() - start,
            "peak_memory_mib": peak_memory_mib(),
        }
