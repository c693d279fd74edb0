"""Which device this process computes on, and how much memory it has used at most."""

from __future__ import annotations

import resource

import torch


def default_device() -> torch.device:
    """The GPU Ray gave this process, if any (Ray sets CUDA_VISIBLE_DEVICES), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_memory_mib() -> float:
    """GPU memory where there is a GPU, resident memory otherwise."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
