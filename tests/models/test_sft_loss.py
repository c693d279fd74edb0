"""The supervised baseline's loss covers the reply only, not the prompt."""

from __future__ import annotations

import pandas as pd
from transformers import AutoTokenizer

from rlaf_ray.config import from_dict
from tests.conftest import base_config


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
