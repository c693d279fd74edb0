"""``run.deterministic``: deterministic kernels in every process that trains or generates.

CPU runs repeat without it (every random draw is seeded: sampling per iteration and rank,
minibatch order, initialization; the prompts' order is fixed). On GPUs some kernels (cuBLAS
split reductions, cuDNN autotuning, atomics) round differently from run to run; this turns them
off. cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` when it creates its handle, so the variable goes
into the processes' environment when Ray starts them (``runtime_env``), not only set from inside.
"""

from __future__ import annotations

import os

CUBLAS_WORKSPACE = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def deterministic_runtime_env(deterministic: bool) -> dict:
    """The ``runtime_env`` of the actors and learner ranks: empty unless ``deterministic``, so
    that Ray keeps reusing its ordinary worker processes otherwise."""
    return {"env_vars": dict(CUBLAS_WORKSPACE)} if deterministic else {}


def use_deterministic_algorithms(deterministic: bool) -> None:
    """Called first in each learner rank and rollout actor. An operation with no deterministic
    implementation then raises (naming it) at its first call rather than silently varying."""
    if not deterministic:
        return
    import torch

    # A fallback for processes started without the runtime_env (e.g. in-process learners); it
    # takes effect if CUDA's cuBLAS handle has not been created yet.
    for key, value in CUBLAS_WORKSPACE.items():
        os.environ.setdefault(key, value)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
