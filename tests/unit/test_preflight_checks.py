"""Checks before any actor starts that read only configs or call user code (no Ray, no weights):
the policy's context length, a reward callable's answer."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, LlamaConfig, T5Config

from rlaf_ray.config import ConfigError, RewardSettings, from_dict
from rlaf_ray.preflight import check_context
from rlaf_ray.roles.reward import check_reward


def config_with(model_dir, prompt: int, new) -> object:
    return from_dict({"model": {"name_or_path": str(model_dir), "max_prompt_length": prompt},
                      "generation": {"max_new_tokens": new}})


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_prompt_and_response_must_fit_the_context(tmp_path, family):
    config = (GPT2Config(n_positions=64, n_embd=8, n_layer=1, n_head=1) if family == "gpt2"
              else LlamaConfig(max_position_embeddings=64, hidden_size=8, num_hidden_layers=1,
                               num_attention_heads=1, intermediate_size=16))
    config.save_pretrained(tmp_path)
    check_context(config_with(tmp_path, 48, 16))  # exactly fits
    with pytest.raises(ConfigError, match=r"^model.max_prompt_length: 48 prompt tokens \+ generation.max_new_tokens "
                                          r"17 exceed the 64-token context of '.*' \(its max_position_embeddings\); lower one of them$"):
        check_context(config_with(tmp_path, 48, [4, 17]))  # the longest response counts


def test_a_seq2seq_policy_has_no_shared_context(tmp_path):
    T5Config(d_model=8, num_layers=1, num_heads=1, d_ff=16, d_kv=8).save_pretrained(tmp_path)
    check_context(config_with(tmp_path, 4096, 512))


def test_a_reward_callable_answers_one_score_per_response():
    check_reward(RewardSettings(callable="tests.rewards:insult_free"))
    with pytest.raises(ConfigError, match=r"^reward.callable: 'tests.rewards:one_score_short' returned 1 score\(s\) "
                                          r"for 2 responses; expected one number per response, in order$"):
        check_reward(RewardSettings(callable="tests.rewards:one_score_short"))
    with pytest.raises(ConfigError, match=r"^reward.callable: 'tests.rewards:_words' failed on a probe of 2 responses"):
        check_reward(RewardSettings(callable="tests.rewards:_words"))  # wrong signature
