"""The distributed loop (learner, rollout and reward actors on local Ray) with a seq2seq policy on
a 4-bit base (QLoRA) that continues a saved adapter: the policy family, the quantized base and
the adapter's start that differ most from the other end-to-end runs' causal fp32 policy, in one
run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rlaf_ray.config import from_dict
from rlaf_ray.models.tiny import resolve_model
from rlaf_ray.run_log import read_metrics
from rlaf_ray.train import train
from tests.conftest import base_config, trained_adapter


@pytest.mark.slow
def test_4bit_seq2seq_policy_continues_a_saved_adapter_in_the_distributed_loop(ray_local, classifier_path,
                                                                               tiny_cache, tmp_path):
    t5 = resolve_model("tiny:t5", tiny_cache)
    saved = tmp_path / "saved"
    trained_adapter(t5, saved, target_modules=None)  # non-zero weights, as a finished run leaves them
    config = base_config(t5, classifier_path, tmp_path, run={"name": "t5-qlora"}, ppo={"num_iterations": 2},
                         model={"dtype": "4bit", "bnb_4bit_compute_dtype": "fp32"},
                         lora={"target_modules": None, "init_from": str(saved)},
                         resources={"learner": {"num_workers": 1, "num_cpus": 0.5}})
    run_dir = train(from_dict(config))

    metrics = read_metrics(run_dir)
    assert [m["iteration"] for m in metrics] == [1, 2]
    for m in metrics:
        for key in ("reward/mean", "kl/mean", "ppo/policy_loss", "ppo/value_loss", "ppo/entropy"):
            assert math.isfinite(m[key]), key
    params = json.loads((run_dir / "parameters.json").read_text())
    assert params["seq2seq"] and params["architecture"] == "T5ForConditionalGeneration"
    assert params["dtype"] == "4bit" and params["lora_target_modules"] == ["q", "v"]
    assert params["trainable"] == params["adapter"] + params["value_head"] and 0 < params["trainable_share"] < 1
    start = load_file(str(saved / "adapter_model.safetensors"))
    end = load_file(str(run_dir / "final" / "adapter" / "adapter_model.safetensors"))
    assert start.keys() == end.keys()
    assert any(not torch.equal(start[k], end[k]) for k in start)  # trained further from where it was
