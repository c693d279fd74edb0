"""The toxicity meter as a Ray Data pipeline: k samples, continuation only, 1 or 2 actors, one
model or several in one pass, the world's judges, an adapter's KL; bad input."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest

from rlaf_ray.config import ConfigError, RewardSettings, from_dict
from tests.conftest import DATA, base_config


def meter_config(policy_path, classifier_path, tmp_path, path, **evaluation):
    return from_dict(base_config(
        policy_path, classifier_path, tmp_path,
        data={"source": "files", "path": str(path), "text_column": "text", "min_chars": 0, "max_chars": None},
        evaluation={"split": "train", "max_prompts": 6, "samples_per_prompt": 4, "max_new_tokens": 8,
                    "num_cpus_per_actor": 0.25, "prompts_per_batch": 2, **evaluation}))


@pytest.mark.slow
def test_meter_pipeline_k_samples_continuation_only_same_with_1_and_2_actors_alone_or_with_an_adapter(
        ray_local, policy_path, classifier_path, tmp_path):
    from rlaf_ray import world
    from rlaf_ray.evaluation.meter import measure_models
    from rlaf_ray.preflight import prepare
    from rlaf_ray.roles.reward import ClassifierReward
    from tests.conftest import trained_adapter

    # Prompts full of the insult lexicon: scoring prompt + continuation would look toxic.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "text": f"#Person1#: You are so stupid, you idiot {i}!\n"
                                           "#Person2#: Thank you, that is great.\n#Person1#:"}) + "\n"
                               for i in range(6)))
    adapter = trained_adapter(policy_path, tmp_path / "adapter")
    runs = {}
    # The base alone on 1 actor per stage; then on 2, in one pass with an adapter beside it.
    for actors, models in ((1, {"base": None}), (2, {"base": None, "trained": adapter})):
        cfg = prepare(meter_config(policy_path, classifier_path, tmp_path, prompts, judge="detox_world",
                                   generator_actors=actors, scorer_actors=actors), ("train",), evaluation=True)
        results = measure_models(cfg, {name: (path, tmp_path / f"actors{actors}" / name)
                                       for name, path in models.items()})
        for name, result in results.items():
            with result.samples_path.open() as f:
                runs[actors, name] = (result.metrics, {row["id"]: row for row in map(json.loads, f)})

    metrics, rows = runs[1, "base"]
    assert metrics["prompts"] == 6 and metrics["samples"] == 24
    assert all(len(r["continuations"]) == 4 == len(r["toxicity"]) == len(r["perplexity"]) for r in rows.values())
    hate = ClassifierReward(RewardSettings(model_name_or_path=classifier_path, label="hate", score="probability"))
    for row in rows.values():
        assert row["toxicity"] == pytest.approx(hate([], row["continuations"]), abs=1e-6)
        assert not any(row["prompt"] in c for c in row["continuations"])
    with_prompt = hate([], [r["prompt"] + c for r in rows.values() for c in r["continuations"]])
    assert statistics.mean(with_prompt) > metrics["toxicity_mean"] + 0.3

    metrics2, rows2 = runs[2, "base"]
    assert rows2 == rows  # same draws and scores, however many actors and whatever shares the pass
    for key in ("expected_max_toxicity", "toxicity_probability", "toxicity_mean", "perplexity", "distinct_2"):
        assert metrics2[key] == pytest.approx(metrics[key])
    assert 0 < metrics["time_share/generate"] < 1
    # no adapter: no KL to the base, and none recorded per sample
    assert metrics["kl"] == 0.0 and all("kl" not in row for row in rows.values())
    # the adapter in the same pass: its own samples, each with its KL to the base
    adapted, adapted_rows = runs[2, "trained"]
    assert adapted["prompts"] == 6 and adapted_rows.keys() == rows.keys()
    kl = [k for r in adapted_rows.values() for k in r["kl"]]
    assert len(kl) == 24 and adapted["kl"] == pytest.approx(statistics.mean(kl)) and min(map(abs, kl)) > 0
    # the world's exact judges, sample by sample, and their rates
    texts = [c for r in adapted_rows.values() for c in r["continuations"]]
    assert [t for r in adapted_rows.values() for t in r["toxic"]] == [world.is_toxic(c) for c in texts]
    assert [g for r in adapted_rows.values() for g in r["grammatical"]] == [world.is_grammatical(c) for c in texts]
    assert adapted["toxic_rate"] == sum(map(world.is_toxic, texts)) / len(texts)


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
