"""The toxicity meter: metric definitions, the Ray Data pipeline, the evaluate module, bad input."""

from __future__ import annotations

import json
import math
import shutil
import statistics

import pytest
import torch

from rlaf_ray.config import ConfigError, RewardSettings, from_dict
from rlaf_ray.evaluation.metrics import (
    MeterTotals,
    distinct_n,
    expected_max_toxicity,
    toxicity_probability,
)
from tests.conftest import DATA, base_config


def test_metric_definitions_by_hand():
    assert expected_max_toxicity([[0.1, 0.6], [0.2, 0.3]]) == pytest.approx(0.45)
    # "at or above 0.5": 0.5 counts, 0.49 does not
    assert toxicity_probability([[0.5, 0.1], [0.49, 0.2]]) == 0.5
    # unigrams a b a b a b c: 3 unique of 7; bigrams ab ba ab | ab bc: 3 unique of 5
    assert distinct_n(["a b a b", "a b c"], 1) == pytest.approx(3 / 7)
    assert distinct_n(["a b a b", "a b c"], 2) == pytest.approx(3 / 5)
    assert distinct_n(["a", ""], 2) == 0.0

    totals = MeterTotals()
    totals.add_prompt(["x y", "x z"], [0.1, 0.7], [2.0, 4.0], lexicon=["z"])
    totals.add_prompt(["y y"], [0.2], [float("nan")], lexicon=["z"])
    s = totals.summary()
    assert s["expected_max_toxicity"] == pytest.approx((0.7 + 0.2) / 2)
    assert s["toxicity_probability"] == 0.5
    assert s["toxicity_mean"] == pytest.approx(statistics.mean([0.1, 0.7, 0.2]))
    assert s["toxicity_std"] == pytest.approx(statistics.pstdev([0.1, 0.7, 0.2]))
    assert s["perplexity"] == 3.0  # the undefined (empty-continuation) perplexity is left out
    assert s["lexicon_rate"] == pytest.approx(1 / 3)
    assert s["distinct_1"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert s["empty_rate"] == 0.0


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


def meter_config(policy_path, classifier_path, tmp_path, path, **evaluation):
    return from_dict(base_config(
        policy_path, classifier_path, tmp_path,
        data={"source": "files", "path": str(path), "text_column": "text", "min_chars": 0, "max_chars": None},
        evaluation={"split": "train", "max_prompts": 6, "samples_per_prompt": 4, "max_new_tokens": 8,
                    "num_cpus_per_actor": 0.25, "prompts_per_batch": 2, **evaluation}))


@pytest.mark.slow
def test_meter_pipeline_k_samples_continuation_only_same_with_1_and_2_actors(
        ray_local, policy_path, classifier_path, tmp_path):
    from rlaf_ray.evaluation.meter import measure
    from rlaf_ray.preflight import prepare
    from rlaf_ray.roles.reward import ClassifierReward

    # Prompts full of the insult lexicon: scoring prompt + continuation would look toxic.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "text": f"#Person1#: You are stupid and dumb {i}.\n"
                                           "#Person2#:"}) + "\n" for i in range(6)))
    runs = {}
    for actors in (1, 2):
        cfg = prepare(meter_config(policy_path, classifier_path, tmp_path, prompts,
                                   generator_actors=actors, scorer_actors=actors), ("train",), evaluation=True)
        result = measure(cfg, None, tmp_path / f"actors{actors}")
        with result.samples_path.open() as f:
            runs[actors] = (result.metrics, {row["id"]: row for row in map(json.loads, f)})

    metrics, rows = runs[1]
    assert metrics["prompts"] == 6 and metrics["samples"] == 24
    assert all(len(r["continuations"]) == 4 == len(r["toxicity"]) == len(r["perplexity"]) for r in rows.values())
    hate = ClassifierReward(RewardSettings(model_name_or_path=classifier_path, label="hate", score="probability"))
    for row in rows.values():
        assert row["toxicity"] == pytest.approx(hate([], row["continuations"]), abs=1e-6)
        assert not any(row["prompt"] in c for c in row["continuations"])
    with_prompt = hate([], [r["prompt"] + c for r in rows.values() for c in r["continuations"]])
    assert statistics.mean(with_prompt) > metrics["toxicity_mean"] + 0.3

    metrics2, rows2 = runs[2]
    assert rows2 == rows  # same draws and scores, however many actors
    for key in ("expected_max_toxicity", "toxicity_probability", "toxicity_mean", "perplexity", "distinct_2"):
        assert metrics2[key] == pytest.approx(metrics[key])
    assert 0 < metrics["time_share/generate"] < 1


def test_evaluate_module_loads_locally(classifier_path):
    import evaluate

    from rlaf_ray.evaluation import TOXICITY_MODULE
    from rlaf_ray.roles.reward import ClassifierReward

    toxicity = evaluate.load(TOXICITY_MODULE, classifier_path, module_type="measurement")
    texts = ["you are terrible and dumb", "thanks for the lovely dinner", "hello how are you"]
    scores = toxicity.compute(predictions=texts)["toxicity"]
    hate = ClassifierReward(RewardSettings(model_name_or_path=classifier_path, label="hate", score="probability"))
    assert scores == pytest.approx(hate([], texts), abs=1e-6)
    assert scores[0] > 0.5 > scores[1]
    assert toxicity.compute(predictions=texts, aggregation="maximum")["max_toxicity"] == pytest.approx(max(scores))
    assert toxicity.compute(predictions=texts, aggregation="ratio")["toxicity_ratio"] == pytest.approx(1 / 3)


def test_bad_input_label_empty_prompts_and_k(ray_local, policy_path, classifier_path, tmp_path):
    from rlaf_ray.evaluation.meter import measure
    from rlaf_ray.preflight import prepare

    relabelled = tmp_path / "sentiment"
    shutil.copytree(classifier_path, relabelled)
    config = json.loads((relabelled / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "positive", "1": "negative"}, {"positive": 0, "negative": 1}
    (relabelled / "config.json").write_text(json.dumps(config))
    cfg = meter_config(policy_path, classifier_path, tmp_path, DATA / "detox_world" / "{split}.jsonl",
                       classifier=str(relabelled))
    with pytest.raises(ConfigError) as err:
        prepare(cfg, ("train",), evaluation=True)
    assert str(err.value) == (f"evaluation.toxic_label: 'hate' is not a label of '{relabelled}'; "
                              "its labels: positive, negative")

    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"id": "a", "text": "short"}) + "\n")
    cfg = prepare(meter_config(policy_path, classifier_path, tmp_path, empty), ("train",), evaluation=True)
    cfg.data.min_chars = 100
    with pytest.raises(ConfigError, match=r"^evaluation: no prompts in the 'train' split of data.path"):
        measure(cfg, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    with pytest.raises(ConfigError, match=r"evaluation.samples_per_prompt: 0 is out of range; allowed \[1, inf\]"):
        meter_config(policy_path, classifier_path, tmp_path, empty, samples_per_prompt=0)
