"""The distributed loop (2 DDP learners, rollout and reward actors on local Ray) with a seq2seq
policy and with a 4-bit base that continues a saved adapter."""

from __future__ import annotations

import json
import math

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM

from rlaf_ray.config import from_dict
from rlaf_ray.models.tiny import resolve_model
from rlaf_ray.run_log import read_metrics
from rlaf_ray.train import train
from tests.conftest import base_config, trained_adapter


def finished(run_dir, iterations: int) -> list[dict]:
    metrics = read_metrics(run_dir)
    assert [m["iteration"] for m in metrics] == list(range(1, iterations + 1))
    for m in metrics:
        for key in ("reward/mean", "kl/mean", "ppo/policy_loss", "ppo/value_loss", "ppo/entropy"):
            assert math.isfinite(m[key]), key
    return metrics


@pytest.mark.slow
def test_seq2seq_policy_trains_in_the_distributed_loop(ray_local, classifier_path, tiny_cache, tmp_path):
    t5 = resolve_model("tiny:t5", tiny_cache)
    config = base_config(t5, classifier_path, tmp_path, lora={"target_modules": None},
                         run={"name": "t5"}, ppo={"num_iterations": 2})
    run_dir = train(from_dict(config))
    finished(run_dir, 2)
    params = json.loads((run_dir / "parameters.json").read_text())
    assert params["seq2seq"] and params["architecture"] == "T5ForConditionalGeneration"
    assert params["lora_target_modules"] == ["q", "v"]
    assert params["trainable"] == params["adapter"] + params["value_head"] and 0 < params["trainable_share"] < 1
    model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(t5), str(run_dir / "final" / "adapter"))
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


@pytest.mark.slow
def test_4bit_base_continues_a_saved_adapter(ray_local, policy_path, classifier_path, tmp_path):
    saved = tmp_path / "saved"
    trained_adapter(policy_path, saved)  # an adapter with non-zero weights, as a finished run leaves
    config = base_config(policy_path, classifier_path, tmp_path, run={"name": "qlora"}, ppo={"num_iterations": 2},
                         model={"dtype": "4bit", "bnb_4bit_compute_dtype": "fp32"},
                         lora={"init_from": str(saved)})
    run_dir = train(from_dict(config))
    finished(run_dir, 2)
    assert json.loads((run_dir / "parameters.json").read_text())["dtype"] == "4bit"
    start = load_file(str(saved / "adapter_model.safetensors"))
    end = load_file(str(run_dir / "final" / "adapter" / "adapter_model.safetensors"))
    assert start.keys() == end.keys()
    assert any(not torch.equal(start[k], end[k]) for k in start)  # trained further from where it was
