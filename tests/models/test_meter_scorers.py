"""The toxicity meter's stages on tiny models: several models in one generator, perplexity by
hand, the local evaluate module."""

from __future__ import annotations

import math

import pytest
import torch

from rlaf_ray.config import RewardSettings


def test_one_generator_samples_each_model_as_it_would_alone(policy_path, tmp_path):
    import pandas as pd

    from rlaf_ray.config import EvaluationSettings, ModelSettings
    from rlaf_ray.evaluation.meter import Generate
    from tests.conftest import trained_adapter

    model = ModelSettings(name_or_path=policy_path)
    evaluation = EvaluationSettings(samples_per_prompt=4, max_new_tokens=8, top_p=0.9)
    adapters = {"sft.v2": trained_adapter(policy_path, tmp_path / "a"),  # a dot: no peft module name
                "rl": trained_adapter(policy_path, tmp_path / "b", target_modules=None)}
    batch = pd.DataFrame({"id": ["p1", "p2"], "prompt": ["#Person1#: You are so dumb.\n#Person2#:",
                                                         "#Person1#: Hello Anna.\n#Person2#:"]})
    together = Generate(model, {"base": None, **adapters}, evaluation)(batch)
    assert list(together["model"]) == ["base", "sft.v2", "rl"] * 2
    for name, adapter in {"base": None, **adapters}.items():
        alone = Generate(model, {name: adapter}, evaluation)(batch)
        mine = together[together["model"] == name].reset_index(drop=True)
        assert list(mine["continuations"]) == list(alone["continuations"]), name
        for kl, kl_alone in zip(mine["kl"], alone["kl"]):
            # the base's KL is 0; an adapter's is not: it was on while its samples were scored
            assert kl == pytest.approx(kl_alone, abs=1e-5) and (name == "base") == (max(map(abs, kl)) == 0)


def test_perplexity_of_continuation_given_prompt(policy_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlaf_ray.config import ModelSettings
    from rlaf_ray.evaluation.meter import ScorePerplexity

    scorer = ScorePerplexity(ModelSettings(name_or_path=policy_path))
    prompt, continuation = "#Person1#: Hello how are you.\n#Person2#:", " Fine thanks for the coffee."
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    model = AutoModelForCausalLM.from_pretrained(policy_path).eval()
    p_ids = tokenizer(prompt)["input_ids"]
    c_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).logits[0], -1)
    nll = [-logp[len(p_ids) + i - 1, tok].item() for i, tok in enumerate(c_ids)]
    expected = math.exp(sum(nll) / len(nll))
    assert scorer.perplexities(prompt, [continuation]) == [pytest.approx(expected, rel=1e-4)]
    assert math.isnan(scorer.perplexities(prompt, [""])[0])


def test_evaluate_module_loads_locally(classifier_path):
    import evaluate

    from rlaf_ray.evaluation import TOXICITY_MODULE
    from rlaf_ray.roles.reward import ClassifierReward

    toxicity = evaluate.load(TOXICITY_MODULE, classifier_path, module_type="measurement")
    texts = ["You are so dumb.", "Thank you, that is wonderful.", "Hello Anna, how are you today?"]
    scores = toxicity.compute(predictions=texts)["toxicity"]
    hate = ClassifierReward(RewardSettings(model_name_or_path=classifier_path, label="hate", score="probability"))
    assert scores == pytest.approx(hate([], texts), abs=1e-6)
    assert scores[0] > 0.5 > scores[1]
    assert toxicity.compute(predictions=texts, aggregation="maximum")["max_toxicity"] == pytest.approx(max(scores))
    assert toxicity.compute(predictions=texts, aggregation="ratio")["toxicity_ratio"] == pytest.approx(1 / 3)
