"""``lora.init: eva`` on the tiny policy, no Ray: each adapted layer's A spans the principal
directions of that layer's inputs over the prompts, the same whatever the torch seed, and the
policy still equals its base (B = 0), which the reference (the adapter disabled) relies on."""

import json

import pytest
import torch

from rlaf_ray.config import from_dict
from rlaf_ray.models.policy import encode_prompts, init_eva, load_policy, load_tokenizer
from tests.conftest import WORLD_DATA

TARGETS = ["q_proj", "v_proj", "o_proj"]


@pytest.fixture(scope="module")
def setup(policy_path):
    cfg = from_dict({"model": {"name_or_path": policy_path}, "lora": {"r": 4, "dropout": 0.0, "target_modules": TARGETS},
                     "data": WORLD_DATA})
    with open(WORLD_DATA["path"].format(split="train")) as f:
        prompts = [json.loads(line)["text"] for line in f][:64]
    return cfg, load_tokenizer(cfg.model), prompts


def policy(cfg, seed: int, tokenizer=None, prompts=None):
    torch.manual_seed(seed)
    model = load_policy(cfg.model, cfg.lora)
    if prompts is not None:
        init_eva(model, tokenizer, prompts, cfg.model)
    return model


def a_matrices(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}


def layer_inputs(model, tokenizer, prompts, cfg) -> dict[str, torch.Tensor]:
    """Every adapted layer's input at the prompts' real (unpadded) tokens, [tokens, features]."""
    seen, hooks = {}, []
    batch = encode_prompts(tokenizer, prompts, cfg.model)
    keep = batch["attention_mask"].bool()
    for name, module in model.named_modules():
        if name.split(".")[-1] in TARGETS and hasattr(module, "base_layer"):
            hooks.append(module.register_forward_hook(
                lambda m, args, out, name=name: seen.__setitem__(name, args[0][keep].detach())))
    with torch.no_grad(), model.disable_adapter():
        model(**batch)
    for hook in hooks:
        hook.remove()
    return seen


def explained(a: torch.Tensor, x: torch.Tensor) -> float:
    """The share of the centred inputs' variance in the row space of ``a``."""
    q, _ = torch.linalg.qr(a.T)
    centred = x - x.mean(dim=0)
    return float((centred @ q).square().sum() / centred.square().sum())


def test_eva_reads_the_principal_directions_of_each_layers_input(setup):
    cfg, tokenizer, prompts = setup
    model = policy(cfg, 0, tokenizer, prompts)
    random_a = a_matrices(policy(cfg, 0))
    inputs = layer_inputs(model, tokenizer, prompts, cfg)
    assert len(inputs) == 6  # 2 layers x 3 targets
    for name, a in a_matrices(model).items():
        x = inputs[name.split(".lora_A")[0]]
        assert torch.allclose(a @ a.T, torch.eye(a.shape[0]), atol=1e-4), name  # orthonormal directions
        # as much of the variance as the top-4 principal components computed here, far more than a
        # random 4-dimensional view of the same inputs
        top = torch.linalg.svd(x - x.mean(dim=0), full_matrices=False).Vh[:a.shape[0]]
        assert explained(a, x) >= 0.97 * explained(top, x), name
        assert explained(a, x) > explained(random_a[name], x) + 0.1, name


def test_eva_is_the_same_for_every_seed_and_starts_as_the_base(setup):
    cfg, tokenizer, prompts = setup
    first, second = policy(cfg, 0, tokenizer, prompts), policy(cfg, 1, tokenizer, prompts)
    a, b = a_matrices(first), a_matrices(second)
    assert all(torch.equal(a[n], b[n]) for n in a)
    random0, random1 = a_matrices(policy(cfg, 0)), a_matrices(policy(cfg, 1))
    assert not any(torch.equal(random0[n], random1[n]) for n in random0)  # what eva takes away
    assert all(p.abs().max() == 0 for n, p in first.named_parameters() if "lora_B" in n)
    batch = encode_prompts(tokenizer, prompts[:8], cfg.model)
    with torch.no_grad():
        with_adapter = first(**batch).logits
        with first.disable_adapter():
            base = first(**batch).logits
    assert torch.equal(with_adapter, base)
    assert first.peft_config["default"].init_lora_weights == "eva"  # saved with the adapter
