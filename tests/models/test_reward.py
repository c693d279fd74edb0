"""Reward worker: label by name, logit vs probability, padded batches equal single scores."""

import pytest
import torch

from rlaf_ray.config import ConfigError, RewardSettings, from_dict
from rlaf_ray.roles.reward import ClassifierReward, RewardWorker, check_reward

TEXTS = ["You are so stupid.", "Thank you, that is great.", "Could you send the report tomorrow?",
         "I really like the menu."]


def test_label_chosen_by_name(classifier_path):
    nothate = ClassifierReward(RewardSettings(model_name_or_path=classifier_path, label="nothate"))
    hate = ClassifierReward(RewardSettings(model_name_or_path=classifier_path, label="hate"))
    assert nothate.index == 0 and hate.index == 1
    enc = nothate.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = nothate.model(**enc).logits
    assert nothate([""] * 4, TEXTS) == pytest.approx(logits[:, 0].tolist(), abs=1e-5)
    assert hate([""] * 4, TEXTS) == pytest.approx(logits[:, 1].tolist(), abs=1e-5)
    # the tiny classifier learned the world's toxic label
    scores = nothate([""] * 4, TEXTS)
    assert scores[0] < min(scores[1:])


def test_probability_scores(classifier_path):
    p_not = ClassifierReward(RewardSettings(model_name_or_path=classifier_path, score="probability"))
    p_hate = ClassifierReward(RewardSettings(model_name_or_path=classifier_path, label="hate",
                                           score="probability"))
    a, b = p_not([""] * 4, TEXTS), p_hate([""] * 4, TEXTS)
    assert all(0.0 <= x <= 1.0 for x in a)
    assert [x + y for x, y in zip(a, b)] == pytest.approx([1.0] * 4, abs=1e-5)


def test_padded_batch_equals_one_at_a_time(classifier_path):
    scorer = ClassifierReward(RewardSettings(model_name_or_path=classifier_path, batch_size=4))
    batched = scorer([""] * 4, TEXTS)
    singles = [scorer([""], [t])[0] for t in TEXTS]
    assert batched == pytest.approx(singles, abs=1e-4)


def test_dynamic_padding_and_truncation(classifier_path):
    scorer = ClassifierReward(RewardSettings(model_name_or_path=classifier_path))
    assert scorer.max_length == 128  # the tokenizer's limit, within the position embeddings
    long_text = "hello " * 1000
    (score,) = scorer([""], [long_text])  # no crash: truncated to the model's limit
    assert torch.isfinite(torch.tensor(score))


def test_prompt_plus_response_input(classifier_path):
    response_only = ClassifierReward(RewardSettings(model_name_or_path=classifier_path))
    with_prompt = ClassifierReward(RewardSettings(model_name_or_path=classifier_path, input="prompt_response"))
    prompts = ["you are dumb and stupid. "] * 2
    responses = ["have a nice day", "thanks"]
    assert with_prompt(prompts, responses) == pytest.approx(
        response_only([""] * 2, [p + r for p, r in zip(prompts, responses)]), abs=1e-5)


def test_missing_label_lists_the_model_labels(classifier_path):
    cfg = RewardSettings(model_name_or_path=classifier_path, label="toxic")
    with pytest.raises(ConfigError) as err:
        check_reward(cfg)
    assert str(err.value) == (f"reward.label: 'toxic' is not a label of {classifier_path!r}; "
                              f"its labels: nothate, hate")


def test_reward_worker_with_callable():
    config = from_dict({"reward": {"callable": "tests.rewards:insult_free"}})
    worker = RewardWorker(config.reward)
    out = worker.score({"prompts": ["p", "p"], "responses": ["you are dumb", "nice day"]})
    assert out["scores"] == pytest.approx([1 - 1 / 3, 1.0])
