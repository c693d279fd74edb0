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


def test_the_baseline_starts_its_adapter_as_the_rl_run_does(policy_path, classifier_path, tmp_path):
    """lora.init: eva reaches the SFT baseline: its trainer's A matrices are those init_eva gives the
    RL learner for the same prompts, and its base is left as it was (B = 0)."""
    import torch

    from rlaf_ray.models.policy import init_eva, load_policy, load_tokenizer
    from rlaf_ray.sft import build_sft_trainer

    config = base_config(policy_path, classifier_path, tmp_path)
    cfg = from_dict({**config, "lora": {**config.get("lora", {}), "init": "eva", "eva_prompts": 8}})
    rows = pd.DataFrame({"prompt": [f"#Person1#: Hello number {i}, how are you today?\n#Person2#:" for i in range(12)],
                         "reference": [" Fine, thanks."] * 12})
    trainer = build_sft_trainer(cfg, rows, rows, str(tmp_path / "scratch"))
    expected = load_policy(cfg.model, cfg.lora)
    init_eva(expected, load_tokenizer(cfg.model), list(rows["prompt"][:8]), cfg.model)
    want = {n: p for n, p in expected.named_parameters() if "lora_A" in n}
    got = {n: p for n, p in trainer.model.named_parameters() if "lora_A" in n}
    assert want and set(got) == set(want)
    assert all(torch.allclose(got[n], want[n], atol=1e-6) for n in want)
    assert all(p.abs().max() == 0 for n, p in trainer.model.named_parameters() if "lora_B" in n)
