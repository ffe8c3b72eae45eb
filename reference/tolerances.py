"""Every tolerance the suite uses, in one place (see ``docs/tolerances.md`` for the reasoning and measurements).

Two rules:

* **Direct** (``VALUE_TOL`` / ``GRAD_TOL``): the implementation against the float64 NumPy oracle where there is no
  torch counterpart to measure against (embedding, positional table) and for float64 runs.
* **Error ratio** (``K``, ``floor``): in float32 and lower, the implementation's max error against the float64
  oracle may be at most ``K`` times torch's own max error on the same inputs plus a floor of ``FLOOR_EPS[dtype]``
  machine epsilons of the output's scale (the FlashAttention test pattern).

Overrides merge by taking the larger value and sit next to the reason they exist. Never loosen one to get green.
"""

from __future__ import annotations

import torch

#: Direct comparison tolerances for forward values, (rtol, atol) by dtype.
VALUE_TOL: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-12, 1e-12),  # the bar: float64 agrees to ~1e-12 relative
    torch.float32: (1e-5, 1e-5),    # ~80 eps: reductions over d_model/d_ff <= 512 in a few layers
    torch.bfloat16: (1.6e-2, 1e-2),  # torch.testing's bfloat16 default rtol; 2 bf16 eps
    torch.float16: (1e-3, 1e-3),     # torch.testing's float16 default rtol
}

#: Direct comparison tolerances for gradients, (rtol, atol) by dtype: backward sums over more terms.
GRAD_TOL: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-5),
    torch.bfloat16: (5e-2, 5e-2),
    torch.float16: (5e-3, 5e-3),
}

#: Error-ratio rule: impl error <= K * torch error + floor.
K: float = 2.0

#: Floor of the error-ratio rule, in machine epsilons of the output scale (max |oracle|, at least 1).
FLOOR_EPS: dict[torch.dtype, float] = {
    torch.float64: 4096.0,  # 4096 * 2.2e-16 = 9.1e-13: the ~1e-12 relative bar for float64
    torch.float32: 16.0,    # 16 * 1.2e-7 = 1.9e-6
    torch.bfloat16: 2.0,    # 2 * 7.8e-3
    torch.float16: 4.0,     # 4 * 9.8e-4
}


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of a floating dtype."""
    return float(torch.finfo(dtype).eps)


def value_tol(dtype: torch.dtype, *overrides: tuple[float, float]) -> tuple[float, float]:
    """(rtol, atol) for forward values in ``dtype``; each override raises a bound, never lowers it."""
    return _merge(VALUE_TOL[dtype], overrides)


def grad_tol(dtype: torch.dtype, *overrides: tuple[float, float]) -> tuple[float, float]:
    """(rtol, atol) for gradients in ``dtype``; each override raises a bound, never lowers it."""
    return _merge(GRAD_TOL[dtype], overrides)


def floor(dtype: torch.dtype, scale: float) -> float:
    """The error-ratio floor: ``FLOOR_EPS[dtype] * eps(dtype) * max(scale, 1)``."""
    return FLOOR_EPS[dtype] * eps(dtype) * max(float(scale), 1.0)


def allowed_error(dtype: torch.dtype, torch_error: float, scale: float, *, k: float = K) -> float:
    """Largest max-abs error the implementation may have: ``k * torch_error + floor(dtype, scale)``."""
    return k * float(torch_error) + floor(dtype, scale)


def _merge(base: tuple[float, float], overrides: tuple[tuple[float, float], ...]) -> tuple[float, float]:
    rtol, atol = base
    for r, a in overrides:
        rtol, atol = max(rtol, r), max(atol, a)
    return rtol, atol
