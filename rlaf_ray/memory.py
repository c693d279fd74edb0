"""Peak memory of this process: GPU memory where there is a GPU, resident memory otherwise."""

from __future__ import annotations

import resource

import torch


def peak_memory_mib() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
