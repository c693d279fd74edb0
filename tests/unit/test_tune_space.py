"""rlaf-ray tune: a bad search fails before Ray starts, with one line; how many trials fit."""

from __future__ import annotations

import pytest
import yaml

from rlaf_ray.cli import main
from rlaf_ray.config import ConfigError, from_dict
from rlaf_ray.tune import tune_search
from rlaf_ray.tune.search import concurrency
from tests.conftest import ITERATIONS, UNBUILT_CLASSIFIER, UNBUILT_POLICY, search_config


@pytest.mark.parametrize("space, tune, expected", [
    ({"lora.rank": {"choice": [4, 8]}}, {}, "tune.search_space.lora.rank: unknown config field; did you mean lora.r"),
    ({"lora.r": {"choice": []}}, {}, "tune.search_space.lora.r: empty choice list"),
    ({"lora.r": {"choice": [4]}}, {"metric": "reward/avg"},
     "tune.metric: 'reward/avg' is not a metric the run reports; did you mean reward/"),
    ({"ppo.learning_rate": {"loguniform": [1e-3, 1e-5]}}, {},
     "tune.search_space.ppo.learning_rate.loguniform: low 0.001 is not below high 1e-05"),
    ({"ppo.learning_rate": {"loguniform": [0, 1e-3]}}, {},
     "tune.search_space.ppo.learning_rate.loguniform: low must be above 0 for a log scale"),
    ({"lora.target_modules": {"uniform": [1, 2]}}, {},
     "tune.search_space.lora.target_modules: uniform needs a numeric field"),
    ({"ppo.batch_size": {"choice": [4, 5]}}, {},
     "tune.search_space: with ppo.batch_size=5: ppo.batch_size: 5 responses do not divide"),
    ({"run.name": {"choice": ["a", "b"]}}, {}, "tune.search_space.run.name: not searchable"),
    ({"lora.r": {"choice": [4]}}, {"grace_period": ITERATIONS}, "tune.grace_period: 4 leaves ASHA"),
])
def test_bad_search_fails_before_ray(tmp_path, capsys, space, tune, expected):
    import ray

    config = search_config(UNBUILT_POLICY, UNBUILT_CLASSIFIER, tmp_path, **tune)
    config["tune"]["search_space"] = space
    config["resources"]["learner"]["num_workers"] = 2  # ppo.batch_size must split over 2 learners
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    was_up = ray.is_initialized()
    assert main(["tune", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"rlaf-ray: error: {expected}" in err, err
    assert all(line.startswith("rlaf-ray: error: ") for line in err.strip().splitlines())
    assert ray.is_initialized() == was_up  # the search never got as far as Ray
    assert not (tmp_path / "results" / "search").exists()


def test_missing_search_algorithm_is_named(tmp_path):
    import importlib.util

    if importlib.util.find_spec("optuna") is not None:
        pytest.skip("optuna is installed")
    config = search_config(UNBUILT_POLICY, UNBUILT_CLASSIFIER, tmp_path, search_alg="optuna")
    config["tune"]["search_space"] = {"lora.r": {"choice": [4, 8]}}
    with pytest.raises(ConfigError, match=r"^tune.search_alg: optuna is not installed"):
        tune_search(from_dict(config))


def test_concurrency_counts_learners_and_data_headroom(tmp_path):
    cfg = from_dict(search_config(UNBUILT_POLICY, UNBUILT_CLASSIFIER, tmp_path))
    # 0.5 CPU per trial (its group and its learner), 1 CPU kept for Ray Data: 2 of them on 2 CPUs
    assert concurrency(cfg, [cfg], {"CPU": 2.0}) == 2
    assert concurrency(cfg, [cfg], {"CPU": 8.0}) == 14
    wide = search_config(UNBUILT_POLICY, UNBUILT_CLASSIFIER, tmp_path)
    wide["resources"]["learner"] = {"num_workers": 2, "num_cpus": 0.5}
    wide = from_dict(wide)  # 1.35 CPUs a trial, learners included
    assert concurrency(wide, [wide], {"CPU": 3.0}) == 1
    assert concurrency(wide, [wide], {"CPU": 4.0}) == 2
    with pytest.raises(ConfigError, match=r"tune.max_concurrent_trials: 3 trials would wait .* at most 2 fit"):
        too_many = from_dict(search_config(UNBUILT_POLICY, UNBUILT_CLASSIFIER, tmp_path, max_concurrent_trials=3))
        concurrency(too_many, [too_many], {"CPU": 2.0})
    with pytest.raises(ConfigError, match=r"^tune: no trial fits this cluster"):
        concurrency(cfg, [cfg], {"CPU": 1.2})
