"""The learner scores responses under exactly the distribution generate sampled from.

Tiny causal and seq2seq models built from configs (no tokenizer needed): generate samples with
temperature, top-k, top-p, repetition penalty and min_new_tokens, keeps its processed scores, and
the learner's log-probs of the sampled tokens must equal log_softmax of those scores.
"""

from __future__ import annotations

import pytest
import torch

from rlaf_ray.config import GenerationSettings, PPOSettings
from rlaf_ray.models.policy import PolicyWithValueHead
from rlaf_ray.ppo.batch import collate
from rlaf_ray.ppo.update import PPOLearner
from tests.models.random_lm import EOS, MAX_NEW, PAD, sample, tiny_policy

SETTINGS = {
    "all-rules": dict(temperature=0.7, top_k=12, top_p=0.8, repetition_penalty=1.6, min_new_tokens=3),
    "top-k-only": dict(top_k=5),
    "nucleus": dict(top_p=0.9, temperature=0.8, min_new_tokens=2),  # no penalty: all positions at once
    "penalty-only": dict(repetition_penalty=0.6, temperature=1.3),
    "fast-path": dict(temperature=0.7, min_new_tokens=3),
}


@pytest.mark.parametrize("seq2seq", [False, True], ids=["causal", "seq2seq"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_learner_logprobs_are_those_of_the_processed_scores(seq2seq, setting):
    g = GenerationSettings(max_new_tokens=MAX_NEW, **SETTINGS[setting])
    policy = tiny_policy(seq2seq)
    prompts, responses, scores = sample(policy, g, seq2seq)
    model = PolicyWithValueHead(policy)
    batch = collate(prompts, responses, PAD, decoder_start_token_id=model.decoder_start_token_id)
    width = batch.response_ids.shape[1]
    expected = torch.log_softmax(scores[:, :width], dim=-1).gather(2, batch.response_ids[..., None])[..., 0]
    learner = PPOLearner(PPOSettings(), model, g, EOS)
    with torch.no_grad():
        logprobs, _, entropy = learner.forward(model, batch, need_entropy=True)
    real = batch.response_mask.bool()
    assert torch.allclose(logprobs[real], expected[real], atol=1e-4), (logprobs - expected)[real].abs().max()
    assert torch.isfinite(logprobs).all() and torch.isfinite(entropy).all()
    if setting in ("all-rules", "top-k-only"):
        assert torch.isinf(scores).any(), "the test must exercise truncation"


def test_truncated_logprobs_carry_gradient_and_stay_finite():
    g = GenerationSettings(max_new_tokens=MAX_NEW, **SETTINGS["all-rules"])
    policy = tiny_policy(seq2seq=False)
    prompts, responses, _ = sample(policy, g, seq2seq=False, seed=1)
    model = PolicyWithValueHead(policy, critic="shared")
    batch = collate(prompts, responses, PAD)
    learner = PPOLearner(PPOSettings(), model, g, EOS)
    logprobs, values, entropy = learner.forward(model, batch, need_entropy=True)
    (logprobs.sum() + entropy.sum() + values.sum()).backward()
    grads = [p.grad for p in learner.params if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert any(gr.abs().sum() > 0 for gr in grads)


def test_reference_is_not_truncated():
    """The base's log-probs keep temperature and penalty but not top-k/top-p: a sampled token
    outside the base's own top-k must not give an infinite KL."""
    g = GenerationSettings(max_new_tokens=MAX_NEW, **SETTINGS["all-rules"])
    policy = tiny_policy(seq2seq=False)
    prompts, responses, _ = sample(policy, g, seq2seq=False)
    model = PolicyWithValueHead(policy)
    batch = collate(prompts, responses, PAD)
    learner = PPOLearner(PPOSettings(), model, g, EOS)
    with torch.no_grad():
        ref = learner._reference_logprobs(batch)
        policy_lp, _, _ = learner.forward(model, batch)
        expected, _, _ = PPOLearner(PPOSettings(), model, untruncated(g), EOS).forward(model, batch)
    real = batch.response_mask.bool()
    assert torch.allclose(ref[real], expected[real], atol=1e-5)
    # Truncation renormalizes onto fewer tokens: the sampled tokens gain probability.
    assert (policy_lp[real] >= ref[real] - 1e-5).all() and (policy_lp[real] > ref[real] + 1e-3).any()


def untruncated(g: GenerationSettings) -> GenerationSettings:
    return g.model_copy(update={"top_k": 0, "top_p": 1.0})
