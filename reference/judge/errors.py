"""Error figures of one tensor against another, in float64: the numbers every verdict of ``reference.judge.compare`` is
made of (max abs / max rel error, where the worst one sits, the reference's scale)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # torch.Tensor | np.ndarray


def to_f64(x: ArrayLike) -> torch.Tensor:
    """A float64 CPU tensor copy of a tensor or array (detached)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def keep_mask(where: ArrayLike, like: torch.Tensor) -> torch.Tensor:
    """``where`` (bool/int array or tensor, broadcastable) as a CPU bool tensor of ``like``'s shape."""
    keep = torch.as_tensor(np.asarray(where) if not isinstance(where, torch.Tensor) else where.cpu())
    return keep.to(torch.bool).expand_as(like)


@dataclass(frozen=True)
class ErrorStats:
    """Max abs/rel error of ``actual`` against ``expected`` and where the worst one sits."""

    max_abs: float
    max_rel: float
    index: tuple[int, ...]
    actual: float
    expected: float
    scale: float  # max |expected|
    numel: int

    def line(self) -> str:
        return (f"max abs error {self.max_abs:.3e}, max rel error {self.max_rel:.3e}; worst at index {self.index}: "
                f"actual {self.actual:.10g} vs expected {self.expected:.10g}")


def error_stats(actual: ArrayLike, expected: ArrayLike, where: ArrayLike | None = None) -> ErrorStats:
    """Errors over the elements selected by ``where`` (bool, broadcastable; default all). NaN counts as inf."""
    a, e = to_f64(actual), to_f64(expected)
    if a.shape != e.shape:
        raise AssertionError(f"shape mismatch: actual {tuple(a.shape)} vs expected {tuple(e.shape)}")
    diff = (a - e).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    if where is not None:
        keep = keep_mask(where, diff)
        diff = torch.where(keep, diff, torch.zeros_like(diff))
        e_abs = torch.where(keep, e.abs(), torch.zeros_like(e))
    else:
        e_abs = e.abs()
    if diff.numel() == 0:
        return ErrorStats(0.0, 0.0, (), 0.0, 0.0, 0.0, 0)
    flat = int(torch.argmax(diff))
    index = tuple(int(i) for i in np.unravel_index(flat, tuple(diff.shape)))
    rel = diff / e_abs.clamp_min(torch.finfo(torch.float64).tiny)
    rel = torch.where(diff == 0, torch.zeros_like(rel), rel)
    return ErrorStats(max_abs=float(diff.max()), max_rel=float(rel.max()), index=index,
                      actual=float(a.reshape(-1)[flat]), expected=float(e.reshape(-1)[flat]),
                      scale=float(e_abs.max()), numel=diff.numel())
