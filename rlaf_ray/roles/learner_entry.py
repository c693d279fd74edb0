"""Ray Train's per-rank function, apart from ``learner``.

Ray Train's controller unpickles the per-rank function before it starts the learner group; a
function pickled by reference makes it import the function's module. ``learner`` imports torch,
transformers, peft and bitsandbytes (~4 s of CPU), which the controller never uses, on the path
of every run's start and every restart of the group.
"""

from __future__ import annotations


def learner_entry(loop_config: dict) -> None:
    from rlaf_ray.roles.learner import learner_loop

    learner_loop(loop_config)
