"""Runs that cannot succeed fail before any actor starts: resources no node has, SFT data without
reference replies."""

from __future__ import annotations

import pytest
import ray

from rlaf_ray.config import ConfigError, from_dict
from tests.conftest import DATA, base_config


def test_unsatisfiable_job_fails_fast_before_any_actor(ray_local, policy_path, classifier_path, tmp_path):
    from rlaf_ray.train import train

    config = base_config(policy_path, classifier_path, tmp_path,
                         resources={"reward": {"num_workers": 1, "num_cpus": 0.25, "num_gpus": 1}})
    with pytest.raises(ConfigError, match=r"^resources.reward: no node can host one reward worker with "
                                          r"\{CPU: 0.25, GPU: 1\}"):
        train(from_dict(config))
    assert not [a for a in ray.util.list_named_actors() if a.startswith("rlaf:")]


def test_missing_references_name_the_column(ray_local, policy_path, classifier_path, tmp_path):
    from rlaf_ray.sft import sft

    config = base_config(policy_path, classifier_path, tmp_path, data={
        "source": "files", "path": str(DATA / "prompts_sample.csv"), "text_column": "question",
        "min_chars": 0, "max_chars": None, "eval_fraction": 0.25})
    with pytest.raises(ConfigError) as err:
        sft(from_dict(config))
    message = str(err.value)
    assert message.startswith("sft: no reference replies in the 'train' split of data.path")
    assert "set data.reference_column to the column holding the replies" in message
    assert not (tmp_path / "results").exists()
