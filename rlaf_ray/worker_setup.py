"""What every process of a run does first: bitsandbytes only where a quantized policy is loaded,
and a quiet console (``rlaf_ray.console``). ``setup_worker`` is Ray's ``worker_process_setup_hook``
for the workers of every job rlaf_ray starts (``console.init_ray``).

peft imports bitsandbytes whenever it is installed, and bitsandbytes loads its backends on import,
which pulls in torch's compiler: measured on 2 cores, 1.2-1.9 s more for each process that
imports peft (the rollout actor, every learner rank, the meter's generators, the driver), and on a
machine without a GPU a warning from each. A process that will load no quantized model marks the
package absent before anything imports it: ``sys.modules[name] = None`` makes ``import name``
raise ImportError and ``importlib.util.find_spec(name)`` answer None (Python's import system),
which is how peft and transformers ask whether it is installed. The actors that load a quantized
policy are started with ``QUANTIZED_ENV`` in their environment (``quantized_env``) and keep it.
"""

from __future__ import annotations

import os
import sys

from rlaf_ray.config import QUANTIZED_DTYPES, ModelSettings
from rlaf_ray.console import quiet_process
from rlaf_ray.determinism import deterministic_runtime_env

QUANTIZED_ENV = "RLAF_RAY_LOADS_QUANTIZED"


def quantized_env(model: ModelSettings) -> dict[str, str]:
    """Environment variables for a process that loads ``model``: keeps bitsandbytes importable
    where the base is quantized."""
    return {QUANTIZED_ENV: "1"} if model.dtype in QUANTIZED_DTYPES else {}


def skip_bitsandbytes() -> None:
    """Mark bitsandbytes absent in this process, unless it was started to load a quantized model
    or has imported bitsandbytes already (then it stays as it is)."""
    if os.environ.get(QUANTIZED_ENV) != "1" and "bitsandbytes" not in sys.modules:
        sys.modules["bitsandbytes"] = None


def setup_worker() -> None:
    """Ray's worker process setup hook: runs in each worker before it imports any task's code."""
    skip_bitsandbytes()
    quiet_process()


def policy_runtime_env(model: ModelSettings, deterministic: bool) -> dict:
    """The ``runtime_env`` of a process that loads the policy ``model`` (a rollout actor, a learner
    rank, a meter's generator): ``run.deterministic``'s variables and ``quantized_env``. Empty when
    neither applies, so that Ray keeps reusing its ordinary worker processes."""
    env_vars = {**deterministic_runtime_env(deterministic).get("env_vars", {}), **quantized_env(model)}
    return {"env_vars": env_vars} if env_vars else {}
