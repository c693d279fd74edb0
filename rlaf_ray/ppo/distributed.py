"""Batch statistics over every learner rank (a no-op with one rank or no process group)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def global_masked_stats(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of the masked entries of ``x`` over all ranks."""
    # where, not x * mask: an inf at a padding position would turn the sums into NaN.
    kept = torch.where(mask.bool(), x, x.new_zeros(()))
    sums = all_reduce_sum(torch.stack([kept.sum(), (kept * kept).sum(), mask.sum()]).double())
    total, total_sq, n = sums[0], sums[1], sums[2].clamp(min=1)
    mean = total / n
    var = (total_sq / n - mean**2).clamp(min=0) * (n / (n - 1) if n > 1 else 1.0)
    return mean.to(x.dtype), var.to(x.dtype)


def global_sums(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Each named value summed over all ranks (one all-reduce for all of them)."""
    summed = all_reduce_sum(torch.tensor(list(values.values()), dtype=torch.float64, device=device))
    return dict(zip(values, summed.tolist()))
