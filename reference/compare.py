"""The comparison helper: ``torch.testing.assert_close`` plus a message that says where and why.

A failure names the component, the configuration, the mismatch count, the worst element (index, both values,
abs/rel error), the tolerance broken, and, under the error-ratio rule, the implementation's error next to torch's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from . import conditioning, tolerances

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


def _log_conditioning(component: str, dtype: Any, used: torch.Tensor, sens: torch.Tensor, ok: bool) -> None:
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


class NonFiniteReference(AssertionError):
    """A reference (the float64 oracle or torch's output) is NaN/inf where values are compared: the comparison is
    undefined there, so it is a test error, never an allowance (restrict ``where`` to the elements it defines)."""


def check_reference_finite(reference: ArrayLike, *, what: str, component: str,
                           config: Mapping[str, Any] | None = None, where: ArrayLike | None = None) -> None:
    """Raise :class:`NonFiniteReference` when ``reference`` holds NaN/inf at a compared element."""
    __tracebackhide__ = True
    r = to_f64(reference)
    bad = ~torch.isfinite(r)
    if where is not None:
        bad = bad & keep_mask(where, bad)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise NonFiniteReference(
            f"{describe(component, config)}: the {what} is non-finite at {int(bad.sum())} compared element(s) "
            f"(first at index {first}: {float(r[first])}); a non-finite reference is a test error, not an allowance")


def describe(component: str, config: Mapping[str, Any] | None) -> str:
    cfg = ", ".join(f"{k}={v}" for k, v in (config or {}).items())
    return f"{component} [{cfg}]"


def assert_close(actual: ArrayLike, expected: ArrayLike, *, component: str,
                 config: Mapping[str, Any] | None = None, rtol: float | None = None, atol: float | None = None,
                 dtype: torch.dtype | None = None, grad: bool = False, where: ArrayLike | None = None,
                 sensitivity: Callable[[], ArrayLike] | None = None) -> None:
    """``torch.testing.assert_close`` in float64 with the tolerance of ``dtype`` (or the given rtol/atol).

    ``where`` selects the elements to compare (others are ignored). ``sensitivity`` (lazy, elementwise: the
    expected value's change under one rounding of its inputs, ``reference.conditioning``) widens each element's
    allowance to ``COND_FACTOR * sensitivity`` where that is larger: what a backward-stable algorithm may err by on
    an ill-conditioned element. The message adds the component, the config and the worst element to torch's own
    report.
    """
    __tracebackhide__ = True
    if (rtol is None) != (atol is None):
        raise ValueError("give rtol and atol together or not at all")
    if rtol is None:
        if dtype is None:
            dtype = actual.dtype if isinstance(actual, torch.Tensor) else torch.float64
        rtol, atol = (tolerances.grad_tol if grad else tolerances.value_tol)(dtype)
    a, e = to_f64(actual), to_f64(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{describe(component, config)}: shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    check_reference_finite(e, what="expected value", component=component, config=config, where=where)
    if where is not None:
        keep = keep_mask(where, a)
        a = torch.where(keep, a, torch.zeros_like(a))  # excluded positions may hold NaN on either side
        e = torch.where(keep, e, torch.zeros_like(e))
    stats = error_stats(a, e)
    cond_line = ""
    if sensitivity is not None and not bool(((a - e).abs() <= atol + rtol * e.abs()).all()):
        sens = to_f64(sensitivity()).expand_as(a)
        check_reference_finite(sens, what="oracle sensitivity", component=component, config=config, where=where)
        allowed = torch.maximum(atol + rtol * e.abs(), conditioning.COND_FACTOR * sens)
        passed = bool(((a - e).abs() <= allowed).all())
        _log_conditioning(component, dtype, ((a - e).abs() - atol - rtol * e.abs()).clamp_min(0), sens, passed)
        if passed:
            return
        excess = ((a - e).abs() / allowed).nan_to_num(nan=float("inf"))
        worst = tuple(int(i) for i in np.unravel_index(int(torch.argmax(excess)), tuple(a.shape)))
        cond_line = (f"\n  conditioning bound broken too: at {worst} error {float((a - e).abs()[worst]):.3e} > "
                     f"{conditioning.COND_FACTOR:g} * sensitivity {float(sens[worst]):.3e} (one rounding of every "
                     f"input and weight moves the oracle by that much there)")

    def message(generated: str) -> str:
        return (f"{describe(component, config)}{' (gradient)' if grad else ''} is not close to its reference\n"
                f"  {stats.line()}\n  tolerance broken: rtol={rtol:.1e}, atol={atol:.1e}{cond_line}\n"
                + "\n".join("  " + line for line in generated.splitlines()))

    torch.testing.assert_close(a, e, rtol=rtol, atol=atol, equal_nan=False, msg=message)


def assert_error_ratio(actual: ArrayLike, torch_out: ArrayLike, oracle: ArrayLike, *, component: str,
                       dtype: torch.dtype, config: Mapping[str, Any] | None = None, k: float = tolerances.K,
                       where: ArrayLike | None = None, label: str = "torch",
                       sensitivity: Callable[[], ArrayLike] | None = None) -> tuple[ErrorStats, ErrorStats]:
    """The error-ratio rule: ``err(impl, oracle) <= k * err(torch, oracle) + floor(dtype, scale)``, or, where
    ``sensitivity`` is given (float32/float64), the conditioning bound if larger: per element
    ``COND_FACTOR * sensitivity + floor`` (``reference.conditioning``). The ratio against one torch path is not a
    bound on what every correct algorithm errs by; the conditioning bound is.

    ``oracle`` is the float64 truth; ``torch_out`` is PyTorch's own module in the same low precision on the same
    inputs and weights. Returns both error figures (for reports). ``where`` restricts the elements compared.
    """
    __tracebackhide__ = True
    check_reference_finite(oracle, what="float64 oracle", component=component, config=config, where=where)
    check_reference_finite(torch_out, what=f"{label} output", component=component, config=config, where=where)
    impl_err = error_stats(actual, oracle, where)
    torch_err = error_stats(torch_out, oracle, where)
    allowed = tolerances.allowed_error(dtype, torch_err.max_abs, impl_err.scale, k=k)
    if not impl_err.max_abs <= allowed:
        cond_line = ""
        if sensitivity is not None:
            a, e = to_f64(actual), to_f64(oracle)
            sens = to_f64(sensitivity()).expand_as(e)
            check_reference_finite(sens, what="oracle sensitivity", component=component, config=config, where=where)
            per_element = torch.clamp(conditioning.COND_FACTOR * sens + tolerances.floor(dtype, impl_err.scale),
                                      min=allowed)
            diff = (a - e).abs().nan_to_num(nan=float("inf"))
            if where is not None:
                diff = torch.where(keep_mask(where, diff), diff, torch.zeros_like(diff))
            passed = bool((diff <= per_element).all())
            _log_conditioning(component, dtype, (diff - tolerances.floor(dtype, impl_err.scale)).clamp_min(0), sens,
                              passed)
            if passed:
                return impl_err, torch_err
            worst = tuple(int(i) for i in np.unravel_index(int(torch.argmax(diff / per_element)), tuple(diff.shape)))
            cond_line = (f"\n  conditioning bound broken too: at {worst} error {float(diff[worst]):.3e} > "
                         f"{conditioning.COND_FACTOR:g} * sensitivity {float(sens[worst]):.3e} + floor (one rounding "
                         f"of every input and weight moves the oracle by that much there)")
        ratio = impl_err.max_abs / torch_err.max_abs if torch_err.max_abs else float("inf")
        raise AssertionError(
            f"{describe(component, config)} exceeds the error-ratio tolerance\n"
            f"  implementation vs float64 oracle: {impl_err.line()}\n"
            f"  {label} vs float64 oracle: {torch_err.line()}\n"
            f"  implementation error / {label} error = {ratio:.3g}\n"
            f"  tolerance broken: {k} * {torch_err.max_abs:.3e} + floor {tolerances.floor(dtype, impl_err.scale):.3e}"
            f" = {allowed:.3e} ({dtype}, output scale {impl_err.scale:.3g}, {impl_err.numel} elements){cond_line}")
    return impl_err, torch_err


def relative_l2_error(actual: ArrayLike, expected: ArrayLike) -> float:
    """``||actual - expected||_2 / ||expected||_2`` over all elements (float64)."""
    a, e = to_f64(actual).reshape(-1), to_f64(expected).reshape(-1)
    return float((a - e).norm() / e.norm().clamp_min(torch.finfo(torch.float64).tiny))


def assert_l2_error_ratio(actual: Mapping[str, ArrayLike], torch_out: Mapping[str, ArrayLike],
                          oracle: Mapping[str, ArrayLike], *, component: str, dtype: torch.dtype,
                          config: Mapping[str, Any] | None = None, k: float = tolerances.K,
                          label: str = "torch", floor_eps: float | None = None) -> tuple[float, float]:
    """The error-ratio rule on the relative L2 error of many tensors taken together (e.g. every gradient).

    For 16-bit gradients through ReLU, where a pre-activation within one rounding step of 0 flips its gate and
    moves a whole row of a weight's gradient: the max-abs rule then measures which run flipped more gates, not
    accuracy (docs/tolerances.md). Rule: ``err_impl <= k * err_torch + floor``, the floor
    ``FLOOR_EPS[dtype] * eps(dtype)`` unless ``floor_eps`` (in epsilons) is given: a caller that can show torch's
    error cannot vanish (e.g. every output is rounded to the dtype) may pass 0 and judge by the ratio alone.
    """
    __tracebackhide__ = True
    names = list(oracle)
    for n in names:
        check_reference_finite(oracle[n], what=f"float64 oracle of {n}", component=component, config=config)
        check_reference_finite(torch_out[n], what=f"{label} value of {n}", component=component, config=config)
    impl_err = relative_l2_error(torch.cat([to_f64(actual[n]).reshape(-1) for n in names]),
                                 torch.cat([to_f64(oracle[n]).reshape(-1) for n in names]))
    torch_err = relative_l2_error(torch.cat([to_f64(torch_out[n]).reshape(-1) for n in names]),
                                  torch.cat([to_f64(oracle[n]).reshape(-1) for n in names]))
    allowed = (tolerances.allowed_error(dtype, torch_err, 0.0, k=k) if floor_eps is None
               else k * torch_err + floor_eps * tolerances.eps(dtype))
    if not impl_err <= allowed:
        per_tensor = sorted(((relative_l2_error(actual[n], oracle[n]), n) for n in names), reverse=True)[:3]
        worst = ", ".join(f"{n} {e:.3e}" for e, n in per_tensor)
        raise AssertionError(
            f"{describe(component, config)} exceeds the error-ratio tolerance (relative L2 over {len(names)} tensors)\n"
            f"  implementation vs float64 oracle: {impl_err:.3e} (worst tensors: {worst})\n"
            f"  {label} vs float64 oracle: {torch_err:.3e}\n"
            f"  tolerance broken: {k} * {torch_err:.3e} + floor {allowed - k * torch_err:.3e} = {allowed:.3e}")
    return impl_err, torch_err
