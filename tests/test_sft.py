"""The supervised baseline: reply-only loss, held-out loss goes down on Ray Train, the
comparison table, and the missing-reference error."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlaf_ray.config import ConfigError, from_dict
from tests.conftest import DATA, base_config

DIALOCONAN = {"source": "dialoconan", "path": str(DATA / "dialoconan_sample.jsonl"), "min_chars": 0,
              "max_chars": None, "eval_fraction": 0.2, "test_fraction": 0.2}


def test_prompt_tokens_carry_no_loss(policy_path, classifier_path, tmp_path):
    from rlaf_ray.sft import build_sft_trainer

    cfg = from_dict(base_config(policy_path, classifier_path, tmp_path))
    rows = pd.DataFrame({"prompt": ["#Person1#: Hello there, how are you.\n#Person2#:", "#Person1#: Hi.\n#Person2#:"],
                         "reference": [" Fine, thanks.", " Good morning to you, friend."]})
    trainer = build_sft_trainer(cfg, rows, rows, str(tmp_path / "scratch"))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    for i, (prompt, reply) in enumerate(zip(rows["prompt"], rows["reference"])):
        n_prompt = len(tokenizer(prompt)["input_ids"])
        n_reply = len(tokenizer(prompt + reply)["input_ids"]) - n_prompt
        labels, ids = batch["labels"][i].tolist(), batch["input_ids"][i].tolist()
        assert labels[:n_prompt] == [-100] * n_prompt  # the prompt: no loss
        reply_labels = labels[n_prompt:n_prompt + n_reply]
        assert reply_labels == ids[n_prompt:n_prompt + n_reply] and -100 not in reply_labels


def test_missing_references_name_the_column(ray_local, policy_path, classifier_path, tmp_path):
    from rlaf_ray.sft import sft

    config = base_config(policy_path, classifier_path, tmp_path, data={
        "source": "files", "path": str(DATA / "prompts_sample.csv"), "text_column": "question",
        "min_chars": 0, "max_chars": None, "eval_fraction": 0.25})
    with pytest.raises(ConfigError) as err:
        sft(from_dict(config))
    message = str(err.value)
    assert message.startswith("sft: no reference replies in the 'train' split of data.path")
    assert "set data.reference_column to the column holding the replies" in message
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_sft_lowers_held_out_loss_and_compares_with_rl(ray_local, policy_path, classifier_path, tmp_path):
    from rlaf_ray.evaluation.compare import compare
    from rlaf_ray.sft import sft
    from rlaf_ray.train import train

    config = base_config(policy_path, classifier_path, tmp_path, data=DIALOCONAN,
                         sft={"num_epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "eval_steps": 5},
                         evaluation={"split": "test", "max_prompts": 6, "samples_per_prompt": 3,
                                     "max_new_tokens": 8, "num_cpus_per_actor": 0.25},
                         run={"name": "sft"})
    sft_dir = sft(from_dict(config))
    summary = json.loads((sft_dir / "sft_metrics.json").read_text())
    assert summary["eval_loss_final"] < summary["eval_loss_initial"] - 0.3, summary
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(policy_path),
                                      str(sft_dir / "final" / "adapter"))
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)

    # The same file drives PPO: the comparison is fair by construction.
    config["run"]["name"] = "rl"
    rl_dir = train(from_dict(config))
    rows = compare([sft_dir, rl_dir], tmp_path / "comparison")
    assert [r["model"] for r in rows] == ["base", "sft", "rl"]
    for row in rows:
        for key in ("expected_max_toxicity", "toxicity_probability", "toxicity_mean", "perplexity",
                    "distinct_1", "distinct_2", "distinct_3"):
            assert key in row
        assert row["prompts"] == 6
    prompts = [[json.loads(line)["prompt"] for line in (tmp_path / "comparison" / m / "samples.jsonl").open()]
               for m in ("base", "sft", "rl")]
    assert sorted(prompts[0]) == sorted(prompts[1]) == sorted(prompts[2])
    table = (tmp_path / "comparison" / "comparison.md").read_text().splitlines()
    assert len(table) == 2 + 3
    assert (tmp_path / "comparison" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
