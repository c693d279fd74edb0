"""Prompt sources through Ray Data, on the sample files shipped in jobs/data."""

from __future__ import annotations

import csv
import json

import pytest

from rlaf_ray.config import ConfigError, DataSettings, ModelSettings
from rlaf_ray.data import check_data, load_split
from rlaf_ray.data.dialogsum import TEMPLATE
from tests.conftest import DATA


def rows_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect(cfg: DataSettings, model: ModelSettings, split: str = "train") -> list[dict]:
    return load_split(cfg, model, split).dataset.take_all()


@pytest.fixture(scope="module")
def model(policy_path) -> ModelSettings:
    return ModelSettings(name_or_path=policy_path, max_prompt_length=1024)


def test_dialogsum_own_splits_template_and_length_filter(ray_local, model):
    cfg = DataSettings(path=str(DATA / "dialogsum" / "{split}.jsonl"), min_chars=200, max_chars=1000)
    for split, own in (("train", "train"), ("eval", "validation"), ("test", "test")):
        raw = rows_of(DATA / "dialogsum" / f"{own}.jsonl")
        expected = {r["id"]: r for r in raw if 200 <= len(r["dialogue"]) <= 1000}
        got = collect(cfg, model, split)
        assert len(expected) < len(raw)  # the filter removes something in every split
        assert sorted(r["id"] for r in got) == sorted(expected)
        for row in got:
            assert row["prompt"] == TEMPLATE.format(dialogue=expected[row["id"]]["dialogue"])
            assert row["reference"] == expected[row["id"]]["summary"]
            assert not row["too_long"]


def test_real_toxicity_prompts_challenging_and_toxicity_filters(ray_local, model):
    path = DATA / "real_toxicity_prompts.jsonl"
    raw = rows_of(path)
    cfg = DataSettings(source="real_toxicity_prompts", path=str(path), shuffle=False)
    assert [r["prompt"] for r in collect(cfg, model)] == [r["prompt"]["text"] for r in raw]

    challenging = collect(DataSettings(source="real_toxicity_prompts", path=str(path), challenging_only=True), model)
    assert sorted(r["prompt"] for r in challenging) == sorted(r["prompt"]["text"] for r in raw if r["challenging"])

    low = collect(DataSettings(source="real_toxicity_prompts", path=str(path), max_prompt_toxicity=0.5), model)
    expected = [r for r in raw if r["prompt"]["toxicity"] is not None and r["prompt"]["toxicity"] <= 0.5]
    assert 0 < len(expected) < len(raw) - 1
    assert sorted(r["prompt"] for r in low) == sorted(r["prompt"]["text"] for r in expected)
    assert {r["reference"] for r in low} == {r["continuation"]["text"] for r in expected}


def test_dialoconan_prompts_end_at_hate_speech_with_counter_narrative_reference(ray_local, model):
    path = DATA / "dialoconan_sample.jsonl"
    raw = rows_of(path)
    dialogues: dict[int, list[dict]] = {}
    for turn in raw:
        dialogues.setdefault(turn["dialogue_id"], []).append(turn)
    expected = {}
    for dialogue_id, turns in dialogues.items():
        turns.sort(key=lambda t: t["turn_id"])
        for i in range(len(turns) - 1):
            if turns[i]["type"] == "HS" and turns[i + 1]["type"] == "CN":
                expected[f"{dialogue_id}-{turns[i]['turn_id']}"] = (turns[: i + 1], turns[i + 1]["text"])
    got = collect(DataSettings(source="dialoconan", path=str(path)), model)
    assert sorted(r["id"] for r in got) == sorted(expected)
    for row in got:
        history, reply = expected[row["id"]]
        assert row["reference"] == reply
        # every earlier turn, in order, and the prompt ends on the hate-speech turn
        positions = [row["prompt"].index(turn["text"]) for turn in history]
        assert positions == sorted(positions)
        assert row["prompt"].rstrip().endswith("Speaker B:")
        assert history[-1]["type"] == "HS"


def test_files_source_reads_csv_with_template_and_reference(ray_local, model):
    path = DATA / "prompts_sample.csv"
    with path.open() as f:
        raw = list(csv.DictReader(f))
    cfg = DataSettings(source="files", path=str(path), text_column="question", reference_column="answer",
                     template="Q: {question}\nA:", shuffle=False)
    got = collect(cfg, model)
    assert [r["prompt"] for r in got] == [f"Q: {r['question']}\nA:" for r in raw]
    assert {r["reference"] for r in got} == {r["answer"] for r in raw}


def test_seeded_split_is_disjoint_complete_and_capped(ray_local, model):
    path = str(DATA / "real_toxicity_prompts.jsonl")
    cfg = DataSettings(source="real_toxicity_prompts", path=path, eval_fraction=0.2, test_fraction=0.2, seed=3)
    parts = {split: [r["prompt"] for r in collect(cfg, model, split)] for split in ("train", "eval", "test")}
    everything = [r["prompt"]["text"] for r in rows_of(DATA / "real_toxicity_prompts.jsonl")]
    assert sorted(sum(parts.values(), [])) == sorted(everything)
    assert all(len(p) >= 5 for p in parts.values())
    assert set(parts["eval"]) == {r["prompt"] for r in collect(cfg, model, "eval")}  # stable

    capped = DataSettings(source="real_toxicity_prompts", path=path, eval_fraction=0.2, test_fraction=0.2,
                        seed=3, max_rows={"train": 10, "eval": 4})
    train = [r["prompt"] for r in collect(capped, model, "train")]
    assert len(train) == 10 and set(train) <= set(parts["train"])
    assert len(collect(capped, model, "eval")) == 4
    other_seed = DataSettings(source="real_toxicity_prompts", path=path, seed=4, max_rows={"train": 10})
    assert [r["prompt"] for r in collect(other_seed, model)] != train


@pytest.mark.parametrize("mode", ["truncate", "drop"])
def test_prompt_token_limit_truncates_from_the_left_or_drops(ray_local, policy_path, mode):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    cfg = DataSettings(path=str(DATA / "dialogsum" / "{split}.jsonl"), too_long=mode, shuffle=False)
    limit = 150
    model = ModelSettings(name_or_path=policy_path, max_prompt_length=limit)
    full = collect(cfg, ModelSettings(name_or_path=policy_path, max_prompt_length=100_000))
    long = {r["id"] for r in full if len(tokenizer(r["prompt"])["input_ids"]) > limit}
    assert 0 < len(long) < len(full)

    split = load_split(cfg, model)
    got = split.dataset.take_all()
    stats = split.stats()
    if mode == "truncate":
        assert stats == {"rows": len(full), "truncated": len(long), "dropped": 0}
        by_id = {r["id"]: r["prompt"] for r in full}
        for row in got:
            assert len(tokenizer(row["prompt"])["input_ids"]) <= limit
            if row["id"] in long:  # the end of the prompt (the instruction) survives
                assert by_id[row["id"]].endswith(row["prompt"][-40:])
                assert row["too_long"]
    else:
        assert stats == {"rows": len(full) - len(long), "truncated": 0, "dropped": len(long)}
        assert {r["id"] for r in got} == {r["id"] for r in full} - long


def test_missing_file_and_missing_column(tmp_path):
    with pytest.raises(ConfigError, match=r"data.path '.*nothere.jsonl': file not found"):
        check_data(DataSettings(source="files", path=str(tmp_path / "nothere.jsonl")))
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(json.dumps({"question": "hi", "answer": "hello"}) + "\n")
    with pytest.raises(ConfigError) as err:
        check_data(DataSettings(source="files", path=str(bad), text_column="text"))
    assert str(err.value) == (f"data.path '{bad}': missing column 'text'; columns present: question, answer")


def test_unknown_source_and_unreachable_hub_dataset(ray_local, model):
    with pytest.raises(ConfigError, match=r"data.source: unknown source 'dialogsumm' \(did you mean 'dialogsum'\?\)"):
        check_data(DataSettings(source="dialogsumm"))
    with pytest.raises(ConfigError) as err:
        load_split(DataSettings(source="dialogsum", path="no-such-org/no-such-dataset"), model)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("data.path 'no-such-org/no-such-dataset': cannot load split 'train' from the dataset hub")
    with pytest.raises(ConfigError, match="data.path: source 'dialoconan' has no dataset-hub copy"):
        check_data(DataSettings(source="dialoconan", path=None))


def test_held_out_split_of_a_single_file_needs_a_fraction():
    with pytest.raises(ConfigError, match=r"one file holds only the train split; for 'eval'"):
        check_data(DataSettings(path=str(DATA / "dialogsum_sample.jsonl")), splits=("eval",))


def test_filter_that_leaves_no_rows_fails_before_any_actor(ray_local, policy_path, classifier_path, tmp_path):
    from rlaf_ray.config import from_dict
    from rlaf_ray.train import train
    from tests.conftest import base_config

    config = base_config(policy_path, classifier_path, tmp_path, data={"min_chars": 5000, "max_chars": 9000})
    with pytest.raises(ConfigError) as err:
        train(from_dict(config))
    assert str(err.value).startswith("data: no prompts left in the train split of data.path ")
    assert "min_chars=5000" in str(err.value)
    assert not (tmp_path / "results").exists()  # nothing written, no run started
    assert not [a for a in ray_local.util.list_named_actors() if a.startswith("rlaf:")]
