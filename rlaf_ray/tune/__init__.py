"""``rlaf-ray tune``: a Ray Tune search in which every trial is a full distributed PPO run.

- ``space``: the search space, parsed and checked before Ray starts, as Tune domains.
- ``trial``: one trial's resources, configuration and Tune function.
- ``search``: the search's driver (concurrency, searcher, ASHA, resume).
- ``summary``: trials.csv, trials.md and best_config.yaml.
"""

from rlaf_ray.tune.search import tune_search

__all__ = ["tune_search"]
