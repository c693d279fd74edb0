"""Adapter sync: after an update, rollout actors report the new version and generate with it."""

import pytest
import ray
import torch

from rlaf_ray.config import from_dict
from rlaf_ray.models.policy import adapter_state_dict, load_policy
from rlaf_ray.roles.learner import sync_adapter
from rlaf_ray.roles.rollout import RolloutWorker

PROMPTS = ["#Person1#: Hello, how are you?", "Summarize the following conversation."]


def test_update_reaches_every_rollout_worker(ray_local, policy_path):
    cfg = from_dict({"model": {"name_or_path": policy_path}, "generation": {"max_new_tokens": 12},
                     "lora": {"target_modules": ["q_proj", "v_proj", "o_proj"]}})
    sections = (cfg.model, cfg.lora, cfg.generation)
    actors = [ray.remote(RolloutWorker).options(num_cpus=0.25, name=f"test-rollout-{i}").remote(*sections, i)
              for i in range(2)]
    before = ray.get([a.generate.remote(PROMPTS, 11) for a in actors])
    assert [b["version"] for b in before] == [0, 0]

    # The learner's policy after an "update": perturbed LoRA tensors.
    torch.manual_seed(1)
    policy = load_policy(cfg.model, cfg.lora)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn_like(param) * 0.5)
    sync_adapter(policy, actors, version=1)

    after = ray.get([a.generate.remote(PROMPTS, 11) for a in actors])
    assert [a["version"] for a in after] == [1, 1]
    assert all(a["response_ids"] != b["response_ids"] for a, b in zip(after, before))
    # What the actors generate is what the learner's weights generate.
    local = RolloutWorker(*sections)
    local.load_adapter(adapter_state_dict(policy), 1)
    expected = local.generate(PROMPTS, 11)["response_ids"]
    assert [a["response_ids"] for a in after] == [expected, expected]


def test_sync_detects_a_worker_that_did_not_load(ray_local, policy_path):
    @ray.remote(num_cpus=0)
    class StaleWorker:  # a rollout worker that silently keeps its old adapter
        def load_adapter(self, state, version):
            return version - 1

    cfg = from_dict({"model": {"name_or_path": policy_path}})
    policy = load_policy(cfg.model, cfg.lora)
    with pytest.raises(RuntimeError, match=r"report versions \[2\], expected 3"):
        sync_adapter(policy, [StaleWorker.remote()], version=3)
