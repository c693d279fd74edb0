"""Every policy family the package serves, through rollout, reference, value and update.

GPT-2, GPT-NeoX (Pythia, RedPajama), Bloom (BloomZ), OPT, Llama (TinyLlama, LaMini) and T5
(FLAN-T5, seq2seq): tiny members built from configs. One PPO iteration each (generate -> score ->
update -> sync), and the learner's log-probs checked against the generator's own logits, which
pins the causal and the seq2seq layouts.
"""

from __future__ import annotations

import math

import pytest
import torch
from trl.trainer.utils import disable_dropout_in_model

from rlaf_ray.config import RewardSettings, from_dict
from rlaf_ray.models.policy import (
    PolicyWithValueHead,
    adapter_state_dict,
    encode_prompts,
    generated_tokens,
    is_seq2seq,
    load_policy,
)
from rlaf_ray.models.tiny import resolve_model
from rlaf_ray.ppo.batch import collate
from rlaf_ray.ppo.update import PPOLearner
from rlaf_ray.roles.reward import ClassifierReward
from rlaf_ray.roles.rollout import RolloutWorker

PROMPTS = ["#Person1#: Hello, how are you today?", "Summarize the following conversation.",
           "#Person2#: I want to book a train ticket.", "#Person1#: Thanks, see you tomorrow."]

# family -> (tiny model, the layer names peft adapts by default)
FAMILIES = {
    "gpt2": ("tiny:gpt2", {"c_attn"}),
    "gpt-neox": ("tiny:gpt-neox", {"query_key_value"}),
    "bloom": ("tiny:bloom", {"query_key_value"}),
    "opt": ("tiny:opt", {"q_proj", "v_proj"}),
    "llama": ("tiny:llama", {"q_proj", "v_proj"}),
    "t5": ("tiny:t5", {"q", "v"}),
}


def family_config(path: str, **model):
    return from_dict({
        "model": {"name_or_path": path, "max_prompt_length": 64, **model},
        "lora": {"dropout": 0.0},  # target_modules: the architecture's default
        "generation": {"max_new_tokens": 6, "min_new_tokens": 6},
        "ppo": {"batch_size": 4, "num_minibatches": 2, "ppo_epochs": 2, "learning_rate": 1e-2},
        "resources": {"learner": {"num_workers": 1}},
    })


def learner_logprobs_match_generation(worker: RolloutWorker, learner: PPOLearner, model: PolicyWithValueHead):
    """Sample with the generator's scores kept (after its min_new_tokens rule, as the learner
    applies it); the learner must give the same log-probs."""
    enc = encode_prompts(worker.tokenizer, PROMPTS, worker.model_settings)
    torch.manual_seed(0)
    with torch.no_grad():
        out = worker.model.generate(**enc, do_sample=True, max_new_tokens=6, min_new_tokens=6, top_k=0,
                                    return_dict_in_generate=True, output_scores=True,
                                    pad_token_id=worker.tokenizer.pad_token_id)
    tokens = generated_tokens(out.sequences, enc["input_ids"].shape[1], worker.seq2seq)
    expected = torch.stack([torch.log_softmax(step.float(), -1).gather(1, tokens[:, i:i + 1])[:, 0]
                            for i, step in enumerate(out.scores)], dim=1)
    prompt_ids = [row[mask.bool()].tolist() for row, mask in zip(enc["input_ids"], enc["attention_mask"])]
    batch = collate(prompt_ids, tokens.tolist(), worker.tokenizer.pad_token_id,
                    decoder_start_token_id=model.decoder_start_token_id)
    with torch.no_grad():
        logprobs, values, _ = learner.forward(model, batch)
    assert torch.allclose(logprobs, expected, atol=1e-4), (logprobs - expected).abs().max()
    assert values.shape == logprobs.shape


@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_ppo_iteration_per_family(family, tiny_cache, classifier_path):
    name, default_targets = FAMILIES[family]
    cfg = family_config(resolve_model(name, tiny_cache))
    assert is_seq2seq(cfg.model) == (family == "t5")  # read from the model's config

    worker = RolloutWorker(cfg.model, cfg.lora, cfg.generation)
    torch.manual_seed(0)
    policy = load_policy(cfg.model, cfg.lora, for_training=True)
    disable_dropout_in_model(policy)  # as the learner does (GPT-2 and T5 have dropout)
    model = PolicyWithValueHead(policy)
    adapted = {n.rsplit(".", 1)[-1] for n, m in model.policy.named_modules() if hasattr(m, "lora_A")}
    assert adapted == default_targets
    learner = PPOLearner(cfg.ppo, model, cfg.generation, worker.eos_token_id)
    learner_logprobs_match_generation(worker, learner, model)

    # generate -> score -> update -> sync
    out = worker.generate(PROMPTS, seed=1)
    assert out["version"] == 0 and all(len(r) == 6 for r in out["response_ids"])
    scores = ClassifierReward(RewardSettings(model_name_or_path=classifier_path), torch.device("cpu"))(
        out["prompts"], out["responses"])
    batch = collate(out["prompt_ids"], out["response_ids"], worker.tokenizer.pad_token_id,
                    decoder_start_token_id=model.decoder_start_token_id)
    with torch.no_grad():  # reference = the same network with the adapter disabled
        assert torch.allclose(learner._reference_logprobs(batch), learner.forward(model, batch)[0], atol=1e-5)
    before = adapter_state_dict(model.policy)
    metrics = learner.step(batch, torch.tensor(scores), torch.tensor(out["ended"]))
    after = adapter_state_dict(model.policy)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(math.isfinite(metrics[k]) for k in ("ppo/policy_loss", "ppo/value_loss", "kl/mean", "ppo/entropy"))
    assert worker.load_adapter(after, 1) == 1
    assert worker.generate(PROMPTS, seed=1)["version"] == 1
    # the rollout now runs the learner's policy: the same log-probs as the learner computes
    learner_logprobs_match_generation(worker, learner, model)
