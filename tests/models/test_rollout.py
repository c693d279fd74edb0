"""Rollout worker: batched generation lengths, EOS handling, seeds, adapter versions."""

import pytest
import torch

from rlaf_ray.config import from_dict
from rlaf_ray.models.policy import adapter_state_dict, encode_prompts
from rlaf_ray.roles.rollout import RolloutWorker

# Dialogues of the offline world, ending where the tiny policy replies with one turn.
PROMPTS = ["#Person1#: Hello, how are you today?\n#Person2#:",
           "#Person1#: Could you send the report?\n#Person2#: Sure, I can send the report tomorrow.\n#Person1#:",
           "#Person1#: You are so stupid.\n#Person2#:"]


def make_worker(policy_path, **generation):
    cfg = from_dict({"model": {"name_or_path": policy_path}, "generation": generation})
    return RolloutWorker(cfg.model, cfg.lora, cfg.generation)


def test_batched_generation_respects_lengths(policy_path):
    # The generation's own token id that never occurs stands in for EOS: no response ends early.
    worker = make_worker(policy_path, max_new_tokens=[4, 7], min_new_tokens=2, eos_token_id=0)
    for seed in range(4):
        out = worker.generate(PROMPTS, seed=seed)
        n = out["max_new_tokens"]
        assert 4 <= n <= 7
        assert [len(r) for r in out["response_ids"]] == [n] * 3
        assert out["ended"] == [False] * 3
        # prompts come back unpadded, as the tokenizer encodes them one by one
        for prompt, ids in zip(PROMPTS, out["prompt_ids"]):
            assert ids == worker.tokenizer(prompt)["input_ids"]


def test_eos_ends_responses(policy_path):
    worker = make_worker(policy_path, max_new_tokens=40)
    eos = worker.tokenizer.eos_token_id
    out = worker.generate(PROMPTS * 4, seed=0)
    assert any(out["ended"]), "the tiny policy was trained to end its lines with EOS"
    for ids, ended in zip(out["response_ids"], out["ended"]):
        assert ids.count(eos) == (1 if ended else 0)
        if ended:
            assert ids[-1] == eos
        else:
            assert len(ids) == 40


def test_min_new_tokens_delays_eos(policy_path):
    worker = make_worker(policy_path, max_new_tokens=12, min_new_tokens=12)
    out = worker.generate(PROMPTS * 4, seed=0)
    assert all(len(r) == 12 for r in out["response_ids"])


def test_seed_determinism(policy_path):
    worker = make_worker(policy_path, max_new_tokens=[5, 12], top_p=0.9, top_k=50, temperature=0.8,
                         repetition_penalty=1.1)
    a, b = worker.generate(PROMPTS, seed=7), worker.generate(PROMPTS, seed=7)
    c = worker.generate(PROMPTS, seed=8)
    assert a["response_ids"] == b["response_ids"] and a["responses"] == b["responses"]
    assert a["response_ids"] != c["response_ids"]


def test_load_adapter_sets_version_and_changes_output(policy_path):
    worker = make_worker(policy_path, max_new_tokens=10)
    before = worker.generate(PROMPTS, seed=3)
    assert before["version"] == 0
    state = {k: torch.randn_like(v) * 0.5 for k, v in adapter_state_dict(worker.model).items()}
    assert worker.load_adapter(state, 5) == 5
    after = worker.generate(PROMPTS, seed=3)
    assert after["version"] == 5
    assert after["response_ids"] != before["response_ids"]


def test_bad_adapter_state_is_refused(policy_path):
    worker = make_worker(policy_path)
    with pytest.raises(ValueError, match="do not belong to this model"):
        worker.load_adapter({"base_model.model.nope.lora_A.weight": torch.zeros(1)}, 1)


def model_with_own_sampling_defaults(policy_path, directory, **defaults) -> str:
    """The tiny policy saved again with a generation_config.json of its own, as hub models ship."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(policy_path)
    model.generation_config = GenerationConfig(do_sample=True, **defaults)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(policy_path).save_pretrained(directory)
    return str(directory)


def processors_used(worker: RolloutWorker) -> list[tuple[str, float | None]]:
    """The logits processors generate builds inside ``worker.generate``, with their settings."""
    base = worker.model.get_base_model()
    built, build = [], base._get_logits_processor

    def recording(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    base._get_logits_processor = recording
    worker.generate(PROMPTS, seed=0)
    (processors,) = built
    # generate turns min_new_tokens into a min_length of prompt width + min_new_tokens as well
    # (the same EOS rule): reported as new tokens.
    width = encode_prompts(worker.tokenizer, PROMPTS, worker.model_settings)["input_ids"].shape[1]
    setting = ("temperature", "top_k", "top_p", "penalty", "min_new_tokens")
    return [(type(p).__name__, p.min_length - width if hasattr(p, "min_length") else
             next((getattr(p, a) for a in setting if hasattr(p, a)), None)) for p in processors]


@pytest.mark.parametrize("generation, expected", [
    # The neutral values (generation's defaults) must not let the model's 0.7 / 50 / 0.5 / 1.3 in.
    ({}, [("MinLengthLogitsProcessor", 0)]),
    ({"temperature": 0.9, "top_k": 7, "top_p": 0.8, "repetition_penalty": 1.1, "min_new_tokens": 2},
     [("RepetitionPenaltyLogitsProcessor", 1.1), ("MinLengthLogitsProcessor", 2),
      ("MinNewTokensLengthLogitsProcessor", 2),
      ("TemperatureLogitsWarper", 0.9), ("TopKLogitsWarper", 7), ("TopPLogitsWarper", 0.8)]),
], ids=["neutral", "configured"])
def test_configured_sampling_wins_over_the_models_generation_config(policy_path, tmp_path, generation, expected):
    import json

    path = model_with_own_sampling_defaults(policy_path, tmp_path, temperature=0.7, top_k=50, top_p=0.5,
                                            repetition_penalty=1.3)
    assert json.loads((tmp_path / "generation_config.json").read_text())["top_k"] == 50
    # The learner replays exactly these processors (ppo/sampling.py), so nothing else may run.
    assert processors_used(make_worker(path, max_new_tokens=3, **generation)) == expected


@pytest.mark.xfail(strict=True, reason=(
    "hf_generation_config leaves fields it does not set (None) to the model's generation_config.json: "
    "no_repeat_ngram_size, min_length, min_p, typical_p, suppress_tokens leak into sampling, which "
    "the learner does not replay"))
def test_no_other_sampling_rule_of_the_model_leaks_in(policy_path, tmp_path):
    path = model_with_own_sampling_defaults(policy_path, tmp_path, no_repeat_ngram_size=2, min_length=4,
                                            min_p=0.1, typical_p=0.9, suppress_tokens=[5])
    assert processors_used(make_worker(path, max_new_tokens=3)) == [("MinLengthLogitsProcessor", 0)]
