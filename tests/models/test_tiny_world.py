"""The tiny models of the ground-truth world do what the world needs of them."""

from __future__ import annotations

import random

from rlaf_ray import world


def test_policy_speaks_the_grammar_and_insults_at_a_known_rate(policy_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlaf_ray.models.tiny import read_card, sample_rates

    model = AutoModelForCausalLM.from_pretrained(policy_path).eval()
    rates = sample_rates(model, AutoTokenizer.from_pretrained(policy_path))  # 400 held-out prompts, T = 1
    assert rates["grammatical_rate"] >= 0.9
    assert 0.2 <= rates["toxic_rate"] <= 0.4
    assert rates["ended_rate"] >= 0.95
    assert read_card(policy_path)["grammatical_rate"] == rates["grammatical_rate"]  # the build's own record


def test_classifier_learned_the_toxic_label_from_text(classifier_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlaf_ray.models.tiny import _accuracy, read_card

    model = AutoModelForSequenceClassification.from_pretrained(classifier_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(classifier_path)
    turns = [d.reply for d in world.sample_dialogues(1000, seed=13)]  # dialogues it never saw
    assert _accuracy(model, tokenizer, turns) >= 0.95
    # As a policy's continuation shows them: after a space (another first token for a BPE
    # tokenizer; a classifier trained on clean turns alone found 90% of these insults and let
    # " You are so stupid." through).
    assert _accuracy(model, tokenizer, [" " + t for t in turns if world.is_toxic(t)]) >= 0.98
    assert _accuracy(model, tokenizer, world.as_written(turns, seed=14)) >= 0.95  # and with slips
    assert read_card(classifier_path)["held_out_accuracy"] >= 0.95


def test_judge_lm_finds_broken_turns_far_less_likely(judge_path):
    from rlaf_ray.config import ModelSettings
    from rlaf_ray.evaluation.meter import ScorePerplexity

    scorer = ScorePerplexity(ModelSettings(name_or_path=judge_path))
    rng = random.Random(0)
    fluent, broken = [], []
    for d in world.sample_dialogues(20, seed=14):
        words = d.reply.split()
        rng.shuffle(words)
        fluent += scorer.nlls(d.prompt, [d.reply_text])[0]
        broken += scorer.nlls(d.prompt, [" " + " ".join(words)])[0]
    # summed NLL over the same tokens' worth of text: word salad costs several nats more per turn
    assert sum(broken) > sum(fluent) + 20 * 3
