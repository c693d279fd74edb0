"""QLoRA bases (bitsandbytes 4-bit NF4 and 8-bit, on CPU), chat prompts, continuing an adapter,
and the errors for a precision the machine cannot run or a layer the model does not have."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from trl.trainer.utils import disable_dropout_in_model

from rlaf_ray.config import ConfigError, from_dict
from rlaf_ray.models.policy import (
    PolicyWithValueHead,
    adapter_state_dict,
    keep_4bit_layers_differentiable,
    load_base_model,
    load_policy,
    trainable_parameters,
)
from rlaf_ray.models.tiny import resolve_model
from rlaf_ray.ppo.batch import collate
from rlaf_ray.ppo.update import PPOLearner
from rlaf_ray.preflight import prepare
from rlaf_ray.roles.rollout import RolloutWorker
from tests.conftest import base_config

PROMPTS = ["#Person1#: Hello, how are you?", "#Person2#: I want to book a train ticket."] * 2


def config(path: str, **model):
    return from_dict({
        "model": {"name_or_path": path, "max_prompt_length": 64, **model},
        "lora": {"dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "generation": {"max_new_tokens": 6, "min_new_tokens": 6},
        "ppo": {"batch_size": 4, "num_minibatches": 2, "ppo_epochs": 2, "learning_rate": 1e-2},
        "resources": {"learner": {"num_workers": 1}},
    })


@pytest.mark.parametrize("dtype", ["4bit", "8bit"])
def test_quantized_base_trains_generates_and_reloads(dtype, policy_path, tmp_path):
    import bitsandbytes as bnb

    cfg = config(policy_path, dtype=dtype, bnb_4bit_compute_dtype="fp32")
    layer = bnb.nn.Linear4bit if dtype == "4bit" else bnb.nn.Linear8bitLt
    worker = RolloutWorker(cfg.model, cfg.lora, cfg.generation)
    assert isinstance(worker.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer, layer)
    out = worker.generate(PROMPTS, seed=0)
    assert all(len(r) == 6 for r in out["response_ids"])

    torch.manual_seed(0)
    policy = load_policy(cfg.model, cfg.lora, for_training=True)
    disable_dropout_in_model(policy)
    model = PolicyWithValueHead(policy)
    trainable, total = trainable_parameters(model)
    float_total = trainable_parameters(PolicyWithValueHead(load_policy(config(policy_path).model, cfg.lora)))[1]
    assert total == float_total  # packed 4-bit weights counted as the values they hold
    learner = PPOLearner(cfg.ppo, model, cfg.generation, worker.eos_token_id)
    batch = collate(out["prompt_ids"], out["response_ids"], worker.tokenizer.pad_token_id)
    before = adapter_state_dict(policy)
    learner.step(batch, torch.tensor([1.0, -1.0, 1.0, -1.0]), torch.tensor(out["ended"]))
    after = adapter_state_dict(policy)
    # Every LoRA tensor moved, the first layer's too: gradients pass through every quantized
    # layer, also after the no-grad eval pass that computes the old log-probs (which, on a CPU
    # with AVX512-BF16, used to repack 4-bit weights into a layout with no backward).
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == list(before)
    assert all(torch.isfinite(v).all() for v in after.values())

    # The adapter reaches a quantized rollout worker and, saved, reloads onto a quantized base.
    worker.load_adapter(after, 1)
    assert worker.generate(PROMPTS, seed=0)["response_ids"] != out["response_ids"]
    policy.save_pretrained(tmp_path / "adapter")
    base = load_base_model(cfg.model)
    keep_4bit_layers_differentiable(base)  # the same 4-bit kernel as the trained policy, to compare
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        expected = policy(**batch.inputs).logits
        logits = reloaded(**batch.inputs).logits
    assert torch.allclose(logits, expected, atol=1e-4)


def test_chat_template_wraps_prompts_and_stops_at_end_of_turn(tiny_cache):
    path = resolve_model("tiny:llama-chat", tiny_cache)
    cfg = from_dict({"model": {"name_or_path": path, "chat_template": True},
                     "generation": {"max_new_tokens": 30, "eos_token": "<|im_end|>"}})
    worker = RolloutWorker(cfg.model, cfg.lora, cfg.generation)
    end = worker.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert worker.eos_token_id == end != worker.tokenizer.eos_token_id
    out = worker.generate(PROMPTS * 2, seed=0)
    start = worker.tokenizer.convert_tokens_to_ids("<|im_start|>")
    for ids in out["prompt_ids"]:
        text = worker.tokenizer.decode(ids)
        assert ids[0] == start and text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
        assert ids.count(worker.tokenizer.bos_token_id) == 0  # the template's tokens only, no extra BOS
    assert any(out["ended"]), "the chat model was trained to end its turns with <|im_end|>"
    for ids, ended in zip(out["response_ids"], out["ended"]):
        assert ids.count(end) == int(ended) and (not ended or ids[-1] == end)


def test_continue_training_from_a_saved_adapter(policy_path, tmp_path):
    cfg = config(policy_path)
    policy = load_policy(cfg.model, cfg.lora)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    policy.save_pretrained(tmp_path / "saved")
    saved = adapter_state_dict(policy)

    cont = from_dict({**cfg.to_dict(), "lora": {"r": 4, "init_from": str(tmp_path / "saved")}})
    resumed = load_policy(cont.model, cont.lora, for_training=True)
    state = adapter_state_dict(resumed)
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    assert any(p.requires_grad for n, p in resumed.named_parameters() if "lora_" in n)
    assert resumed.peft_config["default"].r == 8  # the saved adapter's own settings apply


def test_bad_policy_inputs_fail_before_any_actor(policy_path, classifier_path, tmp_path, tiny_cache, monkeypatch):
    def problems(**sections):
        with pytest.raises(ConfigError) as err:
            prepare(from_dict(base_config(policy_path, classifier_path, tmp_path, **sections)))
        return str(err.value)

    assert problems(lora={"init_from": str(tmp_path)}).startswith(
        f"lora.init_from: {str(tmp_path)!r} has no adapter_config.json")
    assert problems(generation={"eos_token": "<|im_end|>"}).startswith(
        "generation.eos_token: '<|im_end|>' is not a token of the policy's tokenizer")
    assert problems(model={"name_or_path": policy_path, "chat_template": True}).startswith(
        "model.chat_template: the tokenizer of")
    t5 = resolve_model("tiny:t5", tiny_cache)
    message = problems(model={"name_or_path": t5}, lora={"target_modules": ["q_proj"]})
    assert message.startswith(f"lora.target_modules: 'q_proj' is not a linear layer of '{t5}'")
    assert "q, " in message and "wi, wo" in message  # T5's own layer names
    # A CPU without AVX2 cannot be produced here: inject it (the fault a mock is for).
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert problems(model={"name_or_path": policy_path, "dtype": "4bit"}) == (
        "model.dtype: '4bit' on CPU needs bitsandbytes' AVX2 kernels, and this CPU reports 'DEFAULT'; use "
        "fp32/bf16, or give the roles a GPU (resources.<role>.num_gpus)")
