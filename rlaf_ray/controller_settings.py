"""Settings of Ray Train's controller for one ``fit``.

Ray Train reads them from the controller's environment, and passes them on from the environment
of the process that calls ``fit`` (``ray.train.v2._internal.constants.ENV_VARS_TO_PROPAGATE``),
so they are set there, for the ``fit`` only; a user's own values win.
"""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def controller_settings():
    """Set for the ``fit`` in this block:

    - The controller collects each rank's report when it polls the ranks, every 2 s by default,
      and a rank's next report waits until its last one is collected (a queue of one): a model
      whose iteration takes 0.5 s (the offline world's) would spend 1.5 s of every iteration
      waiting. Polled every 0.5 s instead.
    - The preemption watcher (one more process per run) reports notices that nodes other than
      the driver's will be taken away; with one node there are none."""
    import ray

    settings = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    if sum(node["Alive"] for node in ray.nodes()) == 1:
        settings["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    added = {key: value for key, value in settings.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)
