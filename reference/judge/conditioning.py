"""What a correct algorithm may err by: the rounding error of the computation, measured by Monte Carlo arithmetic.

A correct implementation in a dtype of unit roundoff ``u`` is judged against the float64 oracle. How far it may
be off is not a constant: it is ``u`` times the condition of the computation, and the condition of a LayerNorm is
``|mean| / std`` of the row, of a softmax the score range, of a dot product ``sum |terms| / |sum|``, compounded
through every layer and, for gradients, through every backward cancellation. Rather than derive that per component,
it is measured: the oracle is re-run in **Monte Carlo arithmetic** (Parker, Pierce & Eggert, "Monte Carlo
arithmetic", Computing in Science & Engineering 2(4), 2000; the method of Verificarlo and CADNA): what a float
algorithm rounds is rounded once, at random, at the unit roundoff ``u`` of the dtype under test: every input and
weight once (``1 + u * xi``, ``xi`` uniform in [-1, 1]), and the result of every elementary operation once, the
``n - 1`` additions inside a sum (pairwise, as NumPy's and PyTorch's reductions) and the products and partial sums
inside a dot product (sequential, as a BLAS kernel's) included. An operand is not perturbed again where it is used.
The spread of ``TRIALS`` such runs around the exact oracle, maximised over each row, is the rounding error of the
oracle's algorithm on *this* input, large exactly where the computation is ill-conditioned (an intermediate
``a - b`` with ``a ~ b`` keeps the absolute error of ``a`` and ``b``). A comparison then allows ``COND_FACTOR``
(or a comparison's own measured factor, ``LN_COND_FACTOR``) times that spread, or its other bound (``value_tol``,
the error ratio against torch), whichever is larger; each factor is ``HEADROOM`` times the largest error / spread
measured on correct algorithms (docs/tolerances.md).

Two instruments: NumPy oracles (``reference.oracles.numpy_ref``) receive their inputs through
``reference.kit.weights.to_numpy``, which inside :func:`perturbation` hands out :class:`MCArray` views whose ufuncs
(``+ - * / exp sqrt``, sums, ``matmul``) round their results; torch float64 references (the gradient oracle) run
under :class:`MonteCarloMode`, a ``TorchDispatchMode`` that perturbs the result of every aten op, with fused
kernels (LayerNorm, softmax and their backward) decomposed into elementary ops first and attention on the math
backend, so their internal cancellations are seen too.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch._decomp import decomposition_table as _decomposition_table
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
#: Fused kernels run as their decompositions, so their internal roundings are perturbed one by one.
_DECOMPOSE = frozenset(op for op in (
    _aten.native_layer_norm.default, _aten.native_layer_norm_backward.default, _aten._softmax.default,
    _aten._softmax_backward_data.default, _aten._log_softmax.default, _aten._log_softmax_backward_data.default,
    _aten.addmm.default, _aten.linear.default)
    if op in _decomposition_table)


def _math_attention() -> contextlib.AbstractContextManager:
    """``F.scaled_dot_product_attention`` as its math composition (matmul, softmax), whose ops the mode sees."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: the CPU reference has no fused kernel to avoid
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)
#: Ops whose result is exact (moves, copies, comparisons, selections): not perturbed.
_EXACT = frozenset(getattr(_aten, name).default for name in (
    "clone", "_to_copy", "copy_", "detach", "zeros_like", "ones_like", "empty_like", "fill_", "zero_", "where",
    "masked_fill", "new_zeros", "new_ones", "new_empty", "new_full", "full", "zeros", "ones", "empty", "lift_fresh",
    "index_select", "gather", "embedding", "cat", "stack", "_unsafe_view", "threshold_backward", "relu")
    if hasattr(getattr(_aten, name, None), "default"))

#: Perturbed evaluations per estimate: the spread is the largest of ``TRIALS`` random roundings (Kenney & Laub:
#: the probability of underestimating the worst direction by a factor ``w`` falls like ``w^-k`` in the number of
#: samples ``k``). Eight, not three: on the LayerNorm offset rows the largest error / spread of a correct algorithm
#: fell from 3.3 (three trials) to 2.2 while a wrong formula's fell less (docs/tolerances.md).
TRIALS: int = 8

#: Each factor below is HEADROOM times the largest error / spread measured on correct algorithms (docs/tolerances.md).
HEADROOM: float = 2.0

#: Largest error / spread of a correct implementation (scratch_transformer and every positive control on the
#: equivalence, gradient and invariance modules; docs/tolerances.md): 20.6, ``attn_heads_einsum``'s attention at
#: offset inputs (scores ~1e8; its einsum projections err 38x ``nn.MultiheadAttention``'s there), rounded up.
#: Everything else measured <= 3.4 (a float64 LayerNorm at the offset).
MEASURED_RATIO: float = 21.0
COND_FACTOR: float = HEADROOM * MEASURED_RATIO

#: The LayerNorm offset test's own factor: the largest error / spread of four correct float32 LayerNorms (textbook
#: two-pass, ``torch.var_mean``, ``F.layer_norm``, corrected two-pass) over 5,200 offset cases, d = 2..64
#: (docs/tolerances.md). The same algorithm family as the oracle's two-pass, so no other association to cover.
LN_MEASURED_RATIO: float = 2.5
LN_COND_FACTOR: float = HEADROOM * LN_MEASURED_RATIO

_ACTIVE: list[tuple[float, np.random.Generator]] = []


def unit_roundoff(dtype: torch.dtype) -> float:
    """``u = eps / 2`` of a floating dtype: the largest relative error of one rounding to nearest."""
    return float(torch.finfo(dtype).eps) / 2.0


@contextlib.contextmanager
def perturbation(u: float, seed: int) -> Iterator[None]:
    """While active, :func:`perturb` (and so ``reference.kit.weights.to_numpy``) multiplies every floating array it
    sees by ``1 + u * xi``, ``xi`` uniform in [-1, 1], drawn from a generator seeded with ``seed``."""
    _ACTIVE.append((u, np.random.default_rng(seed)))
    try:
        yield
    finally:
        _ACTIVE.pop()


def perturbing() -> bool:
    """Whether a :func:`perturbation` is active: an oracle that caches its plain results must recompute in one."""
    return bool(_ACTIVE)


def perturb(a: np.ndarray) -> np.ndarray:
    """``a`` itself, or inside :func:`perturbation` a floating array times ``1 + u * xi`` as an :class:`MCArray`
    (whose arithmetic keeps perturbing)."""
    if not _ACTIVE or not np.issubdtype(a.dtype, np.floating):
        return a
    return _jitter(np.asarray(a)).view(MCArray)


def _jitter(a: np.ndarray) -> np.ndarray:
    u, rng = _ACTIVE[-1]
    return a * (1.0 + u * rng.uniform(-1.0, 1.0, np.shape(a)))


#: NumPy ufuncs whose result is exact (no rounding to model): sign changes, selections, comparisons.
_EXACT_UFUNCS = frozenset((np.negative, np.positive, np.absolute, np.maximum, np.minimum, np.greater, np.less,
                           np.greater_equal, np.less_equal, np.equal, np.not_equal, np.isfinite, np.isnan))


def _summation_weights(shape: tuple[int, ...], axis: int) -> np.ndarray:
    """``D_i = sum_{k >= max(i, 2)} delta_k`` along ``axis`` (``delta_k = u xi_k``): the first-order error of a
    sequential sum ``s_k = (s_{k-1} + t_k)(1 + delta_k)`` is ``sum_i t_i D_i`` (every partial sum rounded once;
    the first term is no addition's result). Dot products (BLAS kernels accumulate along k) are modelled so."""
    delta = _jitter(np.ones(shape)) - 1.0
    index = [slice(None)] * len(shape)
    index[axis] = slice(0, 1)
    delta[tuple(index)] = 0.0
    return np.flip(np.cumsum(np.flip(delta, axis), axis), axis)


def _pairwise_weights(shape: tuple[int, ...]) -> np.ndarray:
    """``D_i``, along the last axis, of a pairwise (tree) sum: the sum of the ``delta`` of every addition on the
    path from term ``i`` to the root, ``ceil(log2 n)`` of them (NumPy's and PyTorch's CPU reductions sum pairwise,
    in blocks)."""
    n = shape[-1]
    weights = np.zeros(shape)
    width = 1
    while width < n:
        width *= 2
        nodes = -(-n // width)
        delta = _jitter(np.ones(shape[:-1] + (nodes,))) - 1.0
        weights += np.repeat(delta, width, axis=-1)[..., :n]
    return weights


def _rounded_sum(x: np.ndarray, axis: Any = 0, dtype: Any = None, keepdims: bool = False, **kwargs: Any
                 ) -> np.ndarray:
    """``np.add.reduce`` with each of its ``n - 1`` additions rounded once (pairwise order, first order)."""
    x = np.asarray(x, dtype=np.float64)
    exact = np.add.reduce(x, axis=axis, dtype=dtype, keepdims=keepdims, **kwargs)
    axes = tuple(range(x.ndim)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    axes = tuple(a % x.ndim for a in axes)
    if x.ndim == 0 or not axes:
        return np.asarray(exact)
    moved = np.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim)))
    flat = moved.reshape(moved.shape[: x.ndim - len(axes)] + (-1,))
    error = (flat * _pairwise_weights(flat.shape)).sum(axis=-1)
    if keepdims:
        error = np.expand_dims(error, axes)
    return np.asarray(exact + error)


def _rounded_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with every product and every partial sum of each dot product rounded once (sequential order,
    first order): ``error_mn = sum_k a_mk b_kn D_k``. ``D`` is drawn once per row of ``a`` and once per column of
    ``b``, and the two halves averaged (``/ sqrt 2``), so each output's error has the distribution of its own
    independent roundings while costing two more matmuls instead of an [m, k, n] product."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    products = _jitter(np.ones(a.shape)) - 1.0  # each product's rounding, folded into the row's weights
    d_rows = _summation_weights(a.shape, -1) + products
    d_cols = _summation_weights(b.shape, -2) + (_jitter(np.ones(b.shape)) - 1.0)
    return a @ b + ((a * d_rows) @ b + a @ (d_cols * b)) / np.sqrt(2.0)


class MCArray(np.ndarray):
    """A float64 array in Monte Carlo arithmetic: inside :func:`perturbation`, the floating result of every ufunc
    call (and reduction) is perturbed by one random rounding, once (its operands were, when they were made);
    outside, plain arithmetic. An oracle can
    tell (``monte_carlo``) and then follow the standard algorithm whose rounding error it models."""

    monte_carlo = True

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):  # noqa: D105
        # Operands are not perturbed again: each was rounded once already, as an input (``perturb``) or as the
        # result of the operation that made it; perturbing it at every use would round one value many times.
        plain = [np.asarray(x) if isinstance(x, np.ndarray) else x for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(np.asarray(o) for o in kwargs["out"])
        if _ACTIVE and "out" not in kwargs:
            if ufunc is np.add and method == "reduce":
                return _rounded_sum(plain[0], **kwargs).view(MCArray)
            if ufunc is np.matmul and method == "__call__" and all(np.ndim(x) >= 2 for x in plain):
                return _rounded_matmul(*plain).view(MCArray)
            if ufunc in _EXACT_UFUNCS or (method == "reduce" and ufunc in (np.maximum, np.minimum)):
                result = getattr(ufunc, method)(*plain, **kwargs)
                return result.view(MCArray) if isinstance(result, np.ndarray) else result
        result = getattr(ufunc, method)(*plain, **kwargs)
        if isinstance(result, tuple):
            return tuple(self._wrap(r) for r in result)
        return self._wrap(result)

    def __array_function__(self, func, types, args, kwargs):  # noqa: D105
        result = super().__array_function__(func, types, args, kwargs)  # where, concatenate, ...: exact
        if isinstance(result, np.ndarray) and np.issubdtype(result.dtype, np.floating):
            return result.view(MCArray)
        return result

    @staticmethod
    def _wrap(r):
        if isinstance(r, np.ndarray) and np.issubdtype(r.dtype, np.floating):
            return (_jitter(r) if _ACTIVE else r).view(MCArray)
        if isinstance(r, np.floating) and _ACTIVE:
            return np.float64(_jitter(np.asarray(r)))
        return r


class MonteCarloMode(TorchDispatchMode):
    """Run torch ops in Monte Carlo arithmetic: the floating result of every aten op that computes (not views,
    not copies) times ``1 + u * xi``; fused kernels are decomposed first (``DECOMPOSE``), so a LayerNorm backward
    that cancels ``g - mean(g)`` sees the rounding of each term. For float64 references only."""

    def __init__(self, u: float, gen: torch.Generator) -> None:
        super().__init__()
        self.u, self.gen = u, gen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        if func in _DECOMPOSE:
            with self:
                return _decomposition_table[func](*args, **kwargs)
        out = func(*args, **kwargs)
        if func in _EXACT or torch.Tag.inplace_view in func.tags or func.is_view:
            return out
        return torch.utils._pytree.tree_map(self._round, out)

    def _round(self, t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.numel():
            xi = torch.rand(t.shape, generator=self.gen, dtype=torch.float64).to(t.device) * 2 - 1
            return t * (1.0 + self.u * xi)
        return t


def perturb_tensor(t: torch.Tensor, u: float, gen: torch.Generator) -> torch.Tensor:
    """A float64 copy of ``t`` times ``1 + u * xi``."""
    xi = torch.rand(t.shape, generator=gen, dtype=torch.float64) * 2 - 1
    return t.detach().to(torch.float64) * (1.0 + u * xi.to(t.device))


@torch.no_grad()
def perturb_module_(module: nn.Module, u: float, gen: torch.Generator) -> nn.Module:
    """Multiply every floating parameter of ``module`` by ``1 + u * xi`` in place."""
    for p in module.parameters():
        if p.is_floating_point():
            p.copy_(perturb_tensor(p, u, gen).to(p.dtype))
    return module


def _f64(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


#: float64 cannot hold a perturbation of one of its own unit roundoffs (``1 + u * xi`` rounds to 1 or 1 + 2u), so
#: smaller ``u`` are probed at this one and the spread scaled down by ``u / PROBE_U``: rounding errors propagate
#: linearly at first order.
PROBE_U: float = 2.0 ** -40


def probe(u: float) -> tuple[float, float]:
    """(the ``u`` to perturb with, the factor that scales the spread back to ``u``)."""
    return (u, 1.0) if u >= PROBE_U else (PROBE_U, u / PROBE_U)


def sensitivity(oracle: Callable[[], Any], u: float, *, trials: int = TRIALS) -> torch.Tensor:
    """``max_t |oracle()_t - oracle()|`` over ``trials`` runs of the NumPy oracle in Monte Carlo arithmetic at unit
    roundoff ``u``, maximised over each row (last axis): the rounding error of the computation there. NaN where the
    oracle is NaN (never an allowance)."""
    u_run, scale = probe(u)
    base = _f64(oracle())
    worst = torch.zeros_like(base)
    for trial in range(trials):
        with perturbation(u_run, seed=trial):
            moved = _f64(oracle())
        worst = torch.maximum(worst, (moved - base).abs())
    return _rowwise(worst) * scale


def _rowwise(spread: torch.Tensor) -> torch.Tensor:
    """The spread's max over the last axis, for every element of the row: another algorithm puts the same rounding
    in other places of a row (a LayerNorm's mean error lands on every feature, weighted by its own terms), so one
    element's Monte Carlo spread is no bound for it, while the row's is."""
    if spread.dim() == 0 or spread.numel() == 0:
        return spread
    return spread.amax(dim=-1, keepdim=True).expand_as(spread)


def torch_sensitivities(run: Callable[[], dict[str, torch.Tensor]], modules: Sequence[nn.Module],
                        inputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], u: float, *,
                        trials: int = TRIALS) -> dict[str, torch.Tensor]:
    """Elementwise spread of several float64 torch results (``run(modules, inputs)``, e.g. every gradient) over
    ``trials`` runs in Monte Carlo arithmetic at ``u``: parameters and inputs rounded once, every op's result too."""
    u_run, scale = probe(u)
    worst = {name: torch.zeros_like(_f64(value)) for name, value in reference.items()}
    for trial in range(trials):
        gen = torch.Generator().manual_seed(trial)
        moved = [perturb_module_(copy.deepcopy(m), u_run, gen) for m in modules]
        moved_inputs = {k: perturb_tensor(v, u_run, gen).to(v.device) for k, v in inputs.items()}
        with _math_attention(), MonteCarloMode(u_run, gen):
            out = run(moved, moved_inputs)
        for name, value in reference.items():
            worst[name] = torch.maximum(worst[name], (_f64(out[name]) - _f64(value)).abs())
    return {name: _rowwise(w) * scale for name, w in worst.items()}


def log_ratio(component: str, dtype: Any, used: torch.Tensor, sens: torch.Tensor, ok: bool) -> None:
    """With ``SCRATCH_TRANSFORMER_COND_LOG=file``, append one JSON line per comparison the conditioning bound
    decided: the largest ``error / sensitivity`` (what ``COND_FACTOR`` must cover), for docs/tolerances.md."""
    path = os.environ.get("SCRATCH_TRANSFORMER_COND_LOG")
    if not path:
        return
    ratio = (used / sens.clamp_min(torch.finfo(torch.float64).tiny)).nan_to_num(nan=float("inf"))
    with open(path, "a") as log:
        log.write(json.dumps({"impl": os.environ.get("SCRATCH_TRANSFORMER_IMPL", ""), "component": component,
                              "dtype": str(dtype), "ratio": float(ratio.max()) if ratio.numel() else 0.0,
                              "ok": ok}) + "\n")
