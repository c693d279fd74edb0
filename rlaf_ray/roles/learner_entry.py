"""Ray Train's per-rank function, apart from ``learner``.

Ray Train's controller unpickles the per-rank function before it starts the learner group; a
function pickled by reference makes it import the function's module. ``learner`` imports
transformers, peft and bitsandbytes, which the controller never uses: measured, the controller's
start took 5.5 s of CPU with them and 3.6 s without, on the path of every run's start and every
restart of the group. (The role actors' handles reach the ranks by ObjectRef for the same reason:
a handle unpickled imports its actor class's module.)
"""

from __future__ import annotations


def learner_entry(loop_config: dict) -> None:
    from rlaf_ray.roles.learner import learner_loop

    learner_loop(loop_config)
