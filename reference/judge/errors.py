"""Error figures of one tensor against another, in float64: the numbers every verdict of ``reference.judge.compare`` is
made of (max abs / max rel error, where the worst one sits, the reference's scale)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # torch.Tensor | np.ndarray


def describe_value(x: object) -> str:
    """What a value is, for a message: ``"Tensor (2, 5, 8) float32"``, ``"tuple of 2 items (Tensor (2, 5, 8)
    float32, None)"``, ``"None"``."""
    if isinstance(x, torch.Tensor):
        return f"Tensor {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}"
    if isinstance(x, np.ndarray):
        return f"numpy array {x.shape} {x.dtype}"
    if isinstance(x, (tuple, list)):
        items = ", ".join(describe_value(i) for i in x[:4]) + (", ..." if len(x) > 4 else "")
        return f"{type(x).__name__} of {len(x)} item{'s' if len(x) != 1 else ''} ({items})"
    return "None" if x is None else type(x).__name__


def output_problem(actual: object, shape: tuple[int, ...] | torch.Size | None = None, *,
                   arrays: bool = False) -> str | None:
    """Why ``actual`` is not an output the contract's ``shape`` can be compared with (None when it is): not a
    Tensor (a NumPy array passes with ``arrays``), or a Tensor of another shape."""
    if not (isinstance(actual, torch.Tensor) or (arrays and isinstance(actual, np.ndarray))):
        return f"returned {describe_value(actual)}; the contract wants a Tensor" + (
            f" of shape {tuple(shape)}" if shape is not None else "")
    if shape is not None and tuple(actual.shape) != tuple(shape):
        return f"output shape {tuple(actual.shape)}, the contract's is {tuple(shape)}"
    return None


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
