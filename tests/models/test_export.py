"""Adapter export: merged model logits equal base + adapter; generation with training controls."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from rlaf_ray.config import GenerationSettings, LoraSettings, ModelSettings
from rlaf_ray.models.policy import load_policy
from tests.conftest import trained_adapter


def cli(capsys, *args) -> tuple[int, str]:
    """``rlaf-ray <args>`` run here: ``main`` is what the script calls, so the file's commands cost
    one import of the libraries, not one each. Returns the exit status and stderr."""
    from rlaf_ray.cli import main

    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("base_given", [True, False], ids=["--base", "base-from-adapter-config"])
def test_merged_model_equals_base_plus_adapter(policy_path, tmp_path, base_given, capsys):
    adapter = trained_adapter(policy_path, tmp_path / "adapter")
    out = tmp_path / "merged"
    base_args = ["--base", policy_path] if base_given else []  # else: the adapter's own config names it
    status, err = cli(capsys, "merge", *base_args, "--adapter", adapter, "--out", out)
    assert status == 0, err[-2000:]
    assert list(out.glob("*.safetensors")) and (out / "tokenizer.json").is_file()

    ids = torch.tensor([[1, 45, 87, 200, 13, 99, 7]])
    base = AutoModelForCausalLM.from_pretrained(policy_path).eval()
    with torch.no_grad():
        plain = base(ids).logits
        with_adapter = PeftModel.from_pretrained(base, adapter).eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
    assert not torch.allclose(plain, with_adapter, atol=1e-3)  # the adapter changes the model
    assert torch.allclose(merged, with_adapter, atol=1e-4)


def test_merge_accepts_tiny_names_and_refuses_a_missing_adapter(tmp_path, tiny_cache, capsys):
    def merge(adapter, out, *flags: str) -> tuple[int, str]:
        return cli(capsys, "merge", "--base", "tiny:llama", "--cache-dir", tiny_cache, "--adapter", adapter,
                   "--out", out, *flags)

    status, err = merge(tmp_path / "no-adapter", tmp_path / "x")
    assert status == 2
    assert err.strip().splitlines()[-1] == (
        f"rlaf-ray: error: --adapter '{tmp_path / 'no-adapter'}': no adapter_config.json in it; "
        "expected a PEFT adapter directory")
    assert not (tmp_path / "x").exists()

    from rlaf_ray.models.tiny import resolve_model

    adapter = trained_adapter(resolve_model("tiny:llama", tiny_cache), tmp_path / "adapter")
    status, err = merge(adapter, tmp_path / "merged")
    assert status == 0, err[-2000:]
    weights = list((tmp_path / "merged").glob("*.safetensors"))
    assert weights

    # An --out that holds something is never replaced without being asked.
    before = weights[0].stat().st_mtime_ns
    status, err = merge(adapter, tmp_path / "merged")
    assert status == 2 and err.strip().splitlines()[-1] == (
        f"rlaf-ray: error: --out '{tmp_path / 'merged'}': already exists; choose another path, "
        "or add --overwrite to replace it")
    assert weights[0].stat().st_mtime_ns == before
    assert merge(adapter, tmp_path / "merged", "--overwrite")[0] == 0
    assert weights[0].stat().st_mtime_ns != before  # replaced whole, by a rename: nothing left beside it
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_generate_command_writes_one_continuation_per_prompt(policy_path, tmp_path, capsys):
    from rlaf_ray.export import generate

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"#Person1#: Hello {i}.\n#Person2#:"}) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    status, err = cli(capsys, "generate", "--model", policy_path, "--prompts", prompts, "--out", out,
                      "generation.max_new_tokens=6", "generation.min_new_tokens=6")
    assert status == 0, err[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [f"#Person1#: Hello {i}.\n#Person2#:" for i in range(3)]
    assert all(r["response"].strip() for r in rows)
    # same seed, same controls: the same samples
    again = generate(ModelSettings(name_or_path=policy_path), None, [r["prompt"] for r in rows],
                     GenerationSettings(max_new_tokens=6, min_new_tokens=6))
    assert again == [r["response"] for r in rows]


def test_seq2seq_merge_and_generate(tiny_cache, tmp_path):
    """FLAN-T5-style policies export the same way (AutoModelForSeq2SeqLM), and generate from the encoder."""
    from transformers import AutoModelForSeq2SeqLM

    from rlaf_ray.export import generate, merge
    from rlaf_ray.models.tiny import resolve_model

    t5 = resolve_model("tiny:t5", tiny_cache)
    torch.manual_seed(0)
    policy = load_policy(ModelSettings(name_or_path=t5), LoraSettings())  # T5's default targets: q, v
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    policy.save_pretrained(tmp_path / "adapter")
    out = merge(ModelSettings(name_or_path=t5), str(tmp_path / "adapter"), tmp_path / "merged")

    ids, decoder = torch.tensor([[5, 45, 87, 200, 1]]), torch.tensor([[0, 13, 99, 7]])
    base = AutoModelForSeq2SeqLM.from_pretrained(t5).eval()
    with torch.no_grad():
        plain = base(input_ids=ids, decoder_input_ids=decoder).logits
        adapted = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()(
            input_ids=ids, decoder_input_ids=decoder).logits
        merged = AutoModelForSeq2SeqLM.from_pretrained(out).eval()(input_ids=ids, decoder_input_ids=decoder).logits
    assert not torch.allclose(plain, adapted, atol=1e-3)
    assert torch.allclose(merged, adapted, atol=1e-4)

    responses = generate(ModelSettings(name_or_path=str(out)), None, ["Hello there.", "Summarize this talk."],
                         GenerationSettings(max_new_tokens=5, min_new_tokens=5))
    assert len(responses) == 2 and all(r.strip() for r in responses)
