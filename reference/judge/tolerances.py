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


# ------------------------------------------------------------------ intrinsic properties (tests/test_positional.py,
# test_invariances.py, test_dropout_state.py): bounds derived from the property itself, each with its measurement.

#: Sinusoid table vs the float64 formula: an entry at position ``pos`` may be off by ``value_tol(dtype)`` plus
#: ``PE_ANGLE_ULPS * eps(dtype) * pos``: sin's argument ``pos * w`` carries the rounding of ``w`` and of the product
#: in the dtype the table is computed in, and that error grows with ``pos``. Measured (d in 8..512, pos < 2100): the
#: blog's float32 table 0.65 eps32 * pos (1.2e-4 at pos 2048); the same code in float64 1.17 eps64 * pos; this
#: package (float64 formula, rounded once) 0.5 ulp. A float32 table cast to float64 misses by ~1e8 times the bound.
PE_ANGLE_ULPS: float = 4.0

#: Dropout's zero fraction must lie within this many binomial standard deviations sqrt(p (1 - p) / n) of p. At 6
#: sigma a correct dropout fails with probability ~2e-9 per check; the tests also seed the generator.
DROPOUT_SIGMAS: float = 6.0

#: Softmax shift invariance, read through the static attention with a vector ``u`` added to every key (each score
#: row moves by ``q_i . u / sqrt(d_k)``): weights may differ by ``value_tol`` plus ``SOFTMAX_SHIFT_ULPS * eps * C``,
#: ``C = max_i sum_j |q_ij| (|k_j| + |u_j|) / sqrt(d_k)``, the rounding of the shifted scores. Measured (float64,
#: |u| up to 1e4, 3000 draws): every difference within ``value_tol`` alone; 8 leaves room for other summation orders.
SOFTMAX_SHIFT_ULPS: float = 8.0

#: LayerNorm shift/scale invariance in float64: outputs may differ by ``value_tol`` plus
#: ``LAYER_NORM_INPUT_ULPS * eps * max|alpha| * (max|x_row| + |c|) / sqrt(var_row + eps)``, the rounding of the
#: shifted (or scaled) input relative to the row's spread. Measured (d 2..64, rows at 1e-3..1e3 and 1e4 + noise,
#: |c| <= 1e3, s in [1e-2, 1e2], 3000 draws): at most 0.43 of that term beyond ``value_tol``.
LAYER_NORM_INPUT_ULPS: float = 8.0
