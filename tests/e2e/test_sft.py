"""The supervised baseline lowers the held-out loss on Ray Train; the comparison with the base.

``compare`` measures any number of run directories the same way (the first run's held-out
prompts and seeds, base first); a PPO run directory has the same layout as this one
(``final/adapter``), so one run is enough to check the comparison end to end."""

from __future__ import annotations

import json

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM

from rlaf_ray.config import from_dict
from tests.conftest import DATA, base_config

DIALOCONAN = {"source": "dialoconan", "path": str(DATA / "dialoconan_sample.jsonl"), "min_chars": 0,
              "max_chars": None, "eval_fraction": 0.2, "test_fraction": 0.2}


@pytest.mark.slow
def test_sft_lowers_held_out_loss_and_compares_with_the_base(ray_local, policy_path, classifier_path, tmp_path):
    from rlaf_ray.evaluation.compare import compare, comparison_plan
    from rlaf_ray.sft import sft

    config = base_config(policy_path, classifier_path, tmp_path, data=DIALOCONAN,
                         sft={"num_epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "eval_steps": 5},
                         evaluation={"split": "test", "max_prompts": 6, "samples_per_prompt": 3,
                                     "max_new_tokens": 8, "num_cpus_per_actor": 0.25},
                         run={"name": "sft"})
    sft_dir = sft(from_dict(config))
    summary = json.loads((sft_dir / "sft_metrics.json").read_text())
    assert summary["eval_loss_final"] < summary["eval_loss_initial"] - 0.3, summary
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(policy_path),
                                      str(sft_dir / "final" / "adapter"))
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)

    rows = compare(*comparison_plan([sft_dir]), tmp_path / "comparison")
    assert [r["model"] for r in rows] == ["base", "sft"]
    for row in rows:
        for key in ("expected_max_toxicity", "toxicity_probability", "toxicity_mean", "perplexity",
                    "distinct_1", "distinct_2", "distinct_3"):
            assert key in row
        assert row["prompts"] == 6
    prompts = [[json.loads(line)["prompt"] for line in (tmp_path / "comparison" / m / "samples.jsonl").open()]
               for m in ("base", "sft")]
    assert sorted(prompts[0]) == sorted(prompts[1])
    table = (tmp_path / "comparison" / "comparison.md").read_text().splitlines()
    assert len(table) == 2 + 2
    assert (tmp_path / "comparison" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
