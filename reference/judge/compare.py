"""The one judge: every comparison of the kit (tests, report, localiser) is a :class:`Verdict` from :func:`judge`
or :func:`judge_l2`; the ``assert_*`` helpers raise its message when it fails.

Rules (docs/tolerances.md): **direct** ``|a - e| <= atol + rtol |e|`` elementwise (``torch.isclose``; rtol/atol
from ``tolerances.value_tol``/``grad_tol`` or given); **ratio** ``max|a - e| <= K max|t - e| + floor(dtype, scale)``
with ``t`` torch's own output in the same dtype; **ratio-l2** the ratio rule on the relative L2 error of many
tensors together; and, where a rule fails and the caller gives the oracle's ``sensitivity``, the **conditioning**
bound every backward-stable algorithm meets (``reference.judge.conditioning``). A failure names the component, the
configuration, the mismatch count, the worst element (index, both values, abs/rel error), the tolerance broken, and,
under the error-ratio rule, the implementation's error next to torch's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from reference.judge import conditioning, tolerances
from reference.judge.errors import (ArrayLike, ErrorStats, describe_value, error_stats, keep_mask, output_problem,
                                    to_f64)

__all__ = ["ArrayLike", "ErrorStats", "NonFiniteOutput", "NonFiniteReference", "Verdict", "WrongOutput", "assert_close",
           "assert_error_ratio", "assert_l2_error_ratio", "check_output", "check_reference_finite", "describe",
           "describe_value", "error_stats", "judge", "judge_l2", "keep_mask", "output_problem", "relative_l2_error",
           "to_f64"]


class NonFiniteReference(AssertionError):
    """A reference (the float64 oracle or torch's output) is NaN/inf where values are compared: the comparison is
    undefined there, so it is a test error, never an allowance (restrict ``where`` to the elements it defines)."""


class NonFiniteOutput(AssertionError):
    """The implementation produced NaN/inf where a finite value was due: its own output used as the expected value
    (compiled against eager, masked against removed keys, float32 against its own float64) or one of its parameters.
    A finding of the implementation, attributed like any assertion of the test's clauses, never "the reference is
    non-finite"."""


class WrongOutput(AssertionError):
    """An implementation returned no Tensor, or one of another shape than the contract's: no number can be compared,
    so the message says what came back (a failure of the implementation, under the test's own clauses)."""


def check_reference_finite(reference: ArrayLike, *, what: str, component: str,
                           config: Mapping[str, Any] | None = None, where: ArrayLike | None = None,
                           from_impl: bool = False) -> None:
    """Raise :class:`NonFiniteReference` when ``reference`` holds NaN/inf at a compared element, or
    :class:`NonFiniteOutput` when ``from_impl`` (the expected value is the implementation's own)."""
    __tracebackhide__ = True
    r = to_f64(reference)
    bad = ~torch.isfinite(r)
    if where is not None:
        bad = bad & keep_mask(where, bad)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        if from_impl:
            raise NonFiniteOutput(
                f"{describe(component, config)}: the implementation's own {what} is non-finite at {int(bad.sum())} "
                f"compared element(s) (first at index {first}: {float(r[first])}): a finding of the implementation, "
                "not of the reference")
        raise NonFiniteReference(
            f"{describe(component, config)}: the {what} is non-finite at {int(bad.sum())} compared element(s) "
            f"(first at index {first}: {float(r[first])}); a non-finite reference is a test error, not an allowance")


def check_output(actual: object, shape: tuple[int, ...] | torch.Size | None = None, *, component: str,
                 config: Mapping[str, Any] | None = None) -> torch.Tensor:
    """``actual`` (an implementation's output) when it is a Tensor of the contract's ``shape`` (any shape when
    None); else a :class:`WrongOutput` naming the component and what came back. Call it before any arithmetic on an
    output, so a wrong type or shape fails its test with this message rather than a TypeError in the kit."""
    __tracebackhide__ = True
    if (problem := output_problem(actual, shape)) is not None:
        raise WrongOutput(f"{describe(component, config)}: {problem}")
    return actual  # type: ignore[return-value]


def describe(component: str, config: Mapping[str, Any] | None) -> str:
    """``"LayerNormalization [d=4, seed=0]"``: what a message says was compared."""
    cfg = ", ".join(f"{k}={v}" for k, v in (config or {}).items())
    return f"{component} [{cfg}]"


# --------------------------------------------------------------------------------------------------- verdicts
@dataclass(frozen=True, kw_only=True)
class Verdict:
    """One comparison against a reference, the rule it was held to, and why it passed or failed."""

    max_abs: float
    max_rel: float
    scale: float = 0.0  # max |reference| over the compared elements
    torch_abs: float | None = None  # torch's own max abs error on the same inputs (None: no counterpart)
    rule: str  # "direct", "ratio", "ratio-l2", "conditioning", "shape" or "skip"
    tolerance: str  # the rule with its numbers, for people
    allowed: float  # max abs error allowed (direct rule: at the worst element)
    margin: float  # error / allowance at the worst element: <= 1 passes
    ok: bool
    index: tuple[int, ...] = ()  # where the largest abs error sits
    actual: float = math.nan  # the implementation's value there
    expected: float = math.nan  # the reference's value there
    note: str = ""
    explanation: str = field(default="", repr=False)  # the failure message (empty when ``ok``)
    stats: ErrorStats | None = field(default=None, repr=False, compare=False)
    torch_stats: ErrorStats | None = field(default=None, repr=False, compare=False)

    @property
    def ratio(self) -> float | None:
        """Implementation error / torch's own error (None without a torch figure; inf when torch's is 0)."""
        if self.torch_abs is None:
            return None
        if self.torch_abs == 0:
            return 0.0 if self.max_abs == 0 else math.inf
        return self.max_abs / self.torch_abs

    def line(self) -> str:
        """``max abs 1.2e-03 at (0, 3, 5): impl 0.5 vs oracle 0.5012; allowed 2 x ... [FAIL]``."""
        if self.rule in ("shape", "skip"):
            return self.note
        return (f"max abs {self.max_abs:.2e} at {self.index}: impl {self.actual:.8g} vs oracle {self.expected:.8g}; "
                f"allowed {self.allowed:.2e} ({self.tolerance})")

    def message(self) -> str:
        """The assertion message of a failed verdict."""
        return self.explanation or self.line()


def _margin(error: float, allowed: float) -> float:
    return error / allowed if allowed > 0 else (0.0 if error == 0 else math.inf)


def _worst(diff: torch.Tensor, allowance: torch.Tensor | float, where: ArrayLike | None) -> tuple[int, float]:
    """(flat index, value) of the largest ``diff / allowance`` over the compared elements (0 where diff is 0)."""
    ratio = (diff / allowance).nan_to_num(nan=math.inf, posinf=math.inf)
    ratio = torch.where(diff == 0, torch.zeros_like(ratio), ratio)
    if where is not None:
        ratio = torch.where(keep_mask(where, ratio), ratio, torch.zeros_like(ratio))
    if ratio.numel() == 0:
        return 0, 0.0
    flat = int(torch.argmax(ratio))
    return flat, float(ratio.reshape(-1)[flat])


def _shape_verdict(note: str, what: str) -> Verdict:
    """The failing verdict of two tensors that cannot be compared element by element."""
    return Verdict(max_abs=math.inf, max_rel=math.inf, rule="shape", tolerance="shapes must match", allowed=0.0,
                   margin=math.inf, ok=False, note=note, explanation=f"{what}: {note}")


def _output_verdict(actual: ArrayLike, expected: ArrayLike, what: str) -> Verdict | None:
    """The "shape" verdict of an implementation output that is not an array of the reference's shape (else None)."""
    shape = expected.shape if isinstance(expected, (torch.Tensor, np.ndarray)) else np.shape(expected)
    problem = output_problem(actual, shape, arrays=True)
    return None if problem is None else _shape_verdict(problem, what)


def _unravel(flat: int, shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, tuple(shape))) if len(shape) else ()


def judge(actual: ArrayLike, expected: ArrayLike, *, dtype: torch.dtype, torch_out: ArrayLike | None = None,
          rule: str = "auto", grad: bool = False, where: ArrayLike | None = None,
          sensitivity: Callable[[], ArrayLike] | None = None, rtol: float | None = None, atol: float | None = None,
          k: float = tolerances.K, component: str = "", config: Mapping[str, Any] | None = None,
          label: str = "torch", cond_factor: float | None = None, spread_note: str | None = None) -> Verdict:
    """Judge ``actual`` (the implementation) against ``expected`` (the float64 reference). A mismatch is a verdict,
    never an exception (an ``actual`` that is no tensor or array, or has another shape, is a "shape" verdict that
    says what came back); a non-finite ``sensitivity`` at a compared element raises :class:`NonFiniteReference` (a
    test error, as in the ``assert_*`` helpers).

    ``rule="auto"``: the error-ratio rule below float64 when ``torch_out`` (torch's output in ``dtype`` on the same
    inputs) has a finite error, else the direct rule. ``"direct"``: ``|a - e| <= atol + rtol |e|`` elementwise,
    (rtol, atol) given or ``value_tol(dtype)`` (``grad_tol`` with ``grad``); torch's error is still measured, for
    the record. ``"ratio"``: ``max|a - e| <= k max|t - e| + floor(dtype, max|e|)`` (the direct rule when torch's
    error is not finite; a ``torch_out`` of another shape is a "shape" verdict). ``where`` (bool, broadcastable)
    selects the elements compared. ``sensitivity`` (lazy, elementwise): where the rule fails, each element may
    still err by ``COND_FACTOR`` times the reference's Monte Carlo spread (one random rounding of every input and
    operation result, ``reference.judge.conditioning``; direct: the larger
    of that and the rule's allowance; ratio: that plus the floor, at least the rule's allowance); the verdict's rule
    is then ``"conditioning"``; ``cond_factor`` replaces ``COND_FACTOR`` for a comparison with its own measured
    factor (``conditioning.LN_COND_FACTOR``). ``component``/``config``/``label`` only word the message, and
    ``spread_note`` the failure's sentence on what the spread is, for a ``sensitivity`` that is not the oracle's
    Monte Carlo spread (``tests/test_numerics_own.py``: the implementation's own float64 response to rounding-size
    changes of its data).
    """
    what = describe(component, config)
    if (bad := _output_verdict(actual, expected, what)) is not None:
        return bad
    a, e = to_f64(actual), to_f64(expected)
    stats = error_stats(a, e, where)
    torch_stats = None
    if torch_out is not None:
        t = to_f64(torch_out)
        if t.shape != e.shape and rule == "ratio":
            return _shape_verdict(f"{label} output shape {tuple(t.shape)}, the reference's is {tuple(e.shape)}",
                                  what)
        torch_stats = error_stats(t, e, where) if t.shape == e.shape else None
    common = dict(max_abs=stats.max_abs, max_rel=stats.max_rel, scale=stats.scale, index=stats.index,
                  actual=stats.actual, expected=stats.expected, stats=stats, torch_stats=torch_stats,
                  torch_abs=torch_stats.max_abs if torch_stats else None)
    diff = (a - e).abs().nan_to_num(nan=math.inf, posinf=math.inf)
    ratio_rule = rule == "ratio" or (rule == "auto" and dtype != torch.float64 and rtol is None)
    if ratio_rule and torch_stats is not None and math.isfinite(torch_stats.max_abs):
        allowed = tolerances.allowed_error(dtype, torch_stats.max_abs, stats.scale, k=k)
        floor = tolerances.floor(dtype, stats.scale)
        verdict = Verdict(rule="ratio", tolerance=f"{k:g} x {torch_stats.max_abs:.2e} + {floor:.2e}",
                          allowed=allowed, margin=_margin(stats.max_abs, allowed), ok=stats.max_abs <= allowed,
                          **common)
        base: torch.Tensor | float = allowed
    else:
        if rtol is None or atol is None:
            rtol, atol = (tolerances.grad_tol if grad else tolerances.value_tol)(dtype)
        base = atol + rtol * e.abs()
        close = torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=False)
        if where is not None:
            close = close | ~keep_mask(where, close)
        flat, margin = _worst(diff, base, where)
        verdict = Verdict(rule="direct", tolerance=f"rtol={rtol:.0e}, atol={atol:.0e}",
                          allowed=float(base.reshape(-1)[flat]) if base.numel() else atol, margin=margin,
                          ok=bool(close.all()), **common)
    if verdict.ok:
        return verdict
    if sensitivity is not None:
        conditioned = _conditioning(verdict, diff, base, sensitivity, dtype=dtype, where=where, what=what,
                                    component=component, config=config, factor=cond_factor, spread_note=spread_note)
        if conditioned.ok:
            return conditioned
        cond_line = conditioned.explanation
    else:
        cond_line = ""
    return dataclasses.replace(verdict, explanation=_explain(verdict, what, dtype=dtype, grad=grad, k=k, label=label,
                                                             rtol=rtol, atol=atol) + cond_line)


def _conditioning(verdict: Verdict, diff: torch.Tensor, base: torch.Tensor | float,
                  sensitivity: Callable[[], ArrayLike], *, dtype: torch.dtype, where: ArrayLike | None, what: str,
                  component: str, config: Mapping[str, Any] | None, factor: float | None = None,
                  spread_note: str | None = None) -> Verdict:
    """The conditioning bound of a failed verdict: ``ok`` with rule "conditioning", or not ok with the line that
    says where the bound breaks in ``explanation``."""
    sens = to_f64(sensitivity()).expand_as(diff)
    check_reference_finite(sens, what="oracle sensitivity", component=component, config=config, where=where)
    factor = conditioning.COND_FACTOR if factor is None else factor
    beyond = diff > torch.as_tensor(base, dtype=torch.float64)  # where the rule alone fails
    if verdict.rule == "ratio":
        floor = tolerances.floor(dtype, verdict.scale)
        allowance = torch.clamp(factor * sens + floor, min=float(base))
        used = torch.where(beyond, (diff - floor).clamp_min(0), torch.zeros_like(diff))
        text, plus = f"{factor:g} x Monte Carlo spread + floor", f" + floor {floor:.3e}"
    else:
        allowance = torch.maximum(torch.as_tensor(base, dtype=torch.float64).expand_as(diff), factor * sens)
        used = torch.where(beyond, diff, torch.zeros_like(diff))
        text, plus = f"max(rule, {factor:g} x Monte Carlo spread)", ""
    flat, margin = _worst(diff, allowance, where)
    within = diff <= allowance
    if where is not None:
        keep = keep_mask(where, within)
        within, used = within | ~keep, torch.where(keep, used, torch.zeros_like(used))
    passed = bool(within.all())
    conditioning.log_ratio(component, dtype, used, sens, passed)
    if passed:
        return dataclasses.replace(verdict, rule="conditioning", tolerance=text, ok=True, margin=margin,
                                   allowed=float(allowance.reshape(-1)[flat]) if allowance.numel() else 0.0)
    at = _unravel(flat, diff.shape)
    err, spread = float(diff.reshape(-1)[flat]), float(sens.reshape(-1)[flat])
    need = float(used.reshape(-1)[flat]) / spread if spread > 0 else math.inf
    return dataclasses.replace(verdict, explanation=(
        f"\n  conditioning bound broken too: at {at} error {err:.3e} > {factor:g} * spread {spread:.3e}{plus} "
        f"= {float(allowance.reshape(-1)[flat]):.3e}; error / spread = {need:.3g} (the factor is "
        f"{conditioning.HEADROOM:g} x the largest error / spread measured on correct algorithms, docs/tolerances.md). "
        + (spread_note if spread_note is not None else
           f"Spread: the oracle's largest change over its row in {conditioning.TRIALS} Monte Carlo runs, inputs and "
           f"every operation's result rounded once at u = {conditioning.unit_roundoff(dtype):.3e} ({dtype})")))


def _explain(v: Verdict, what: str, *, dtype: torch.dtype, grad: bool, k: float, label: str,
             rtol: float | None, atol: float | None) -> str:
    """The failure message of a direct or ratio verdict (without the conditioning line)."""
    s, t = v.stats, v.torch_stats
    assert s is not None
    if v.rule == "ratio":
        assert t is not None
        ratio = s.max_abs / t.max_abs if t.max_abs else float("inf")
        return (f"{what} exceeds the error-ratio tolerance\n"
                f"  implementation vs float64 oracle: {s.line()}\n"
                f"  {label} vs float64 oracle: {t.line()}\n"
                f"  implementation error / {label} error = {ratio:.3g}\n"
                f"  tolerance broken: {k} * {t.max_abs:.3e} + floor {tolerances.floor(dtype, s.scale):.3e}"
                f" = {v.allowed:.3e} ({dtype}, output scale {s.scale:.3g}, {s.numel} elements)")
    return (f"{what}{' (gradient)' if grad else ''} is not close to its reference\n"
            f"  {s.line()}\n  tolerance broken: rtol={rtol:.1e}, atol={atol:.1e}")


def relative_l2_error(actual: ArrayLike, expected: ArrayLike) -> float:
    """``||actual - expected||_2 / ||expected||_2`` over all elements (float64)."""
    a, e = to_f64(actual).reshape(-1), to_f64(expected).reshape(-1)
    return float((a - e).norm() / e.norm().clamp_min(torch.finfo(torch.float64).tiny))


def judge_l2(actual: Mapping[str, ArrayLike], torch_out: Mapping[str, ArrayLike], oracle: Mapping[str, ArrayLike],
             *, dtype: torch.dtype, k: float = tolerances.K, floor_eps: float | None = None, component: str = "",
             config: Mapping[str, Any] | None = None, label: str = "torch") -> Verdict:
    """The error-ratio rule on the relative L2 error of many tensors taken together (e.g. every gradient).

    For 16-bit gradients through ReLU, where a pre-activation within one rounding step of 0 flips its gate and
    moves a whole row of a weight's gradient: the max-abs rule then measures which run flipped more gates, not
    accuracy (docs/tolerances.md). Rule: ``err_impl <= k * err_torch + floor``, the floor
    ``FLOOR_EPS[dtype] * eps(dtype)`` unless ``floor_eps`` (in epsilons) is given: a caller that can show torch's
    error cannot vanish (e.g. every output is rounded to the dtype) may pass 0 and judge by the ratio alone.
    The verdict's ``max_abs`` and ``max_rel`` are the implementation's relative L2 error, ``torch_abs`` torch's.
    """
    names = list(oracle)
    for n in names:
        if (bad := _output_verdict(actual.get(n), oracle[n], f"{describe(component, config)}, {n}")) is not None:
            return bad

    def flat(values: Mapping[str, ArrayLike]) -> torch.Tensor:
        return torch.cat([to_f64(values[n]).reshape(-1) for n in names])

    impl_err = relative_l2_error(flat(actual), flat(oracle))
    torch_err = relative_l2_error(flat(torch_out), flat(oracle))
    allowed = (tolerances.allowed_error(dtype, torch_err, 0.0, k=k) if floor_eps is None
               else k * torch_err + floor_eps * tolerances.eps(dtype))
    floor = tolerances.floor(dtype, 0.0) if floor_eps is None else floor_eps * tolerances.eps(dtype)
    verdict = Verdict(max_abs=impl_err, max_rel=impl_err, scale=1.0, torch_abs=torch_err, rule="ratio-l2",
                      tolerance=f"rel L2: {k:g} x {torch_err:.2e} + {floor:.2e}", allowed=allowed,
                      margin=_margin(impl_err, allowed), ok=impl_err <= allowed)
    if verdict.ok:
        return verdict
    per_tensor = sorted(((relative_l2_error(actual[n], oracle[n]), n) for n in names), reverse=True)[:3]
    worst = ", ".join(f"{n} {e:.3e}" for e, n in per_tensor)
    return dataclasses.replace(verdict, explanation=(
        f"{describe(component, config)} exceeds the error-ratio tolerance (relative L2 over {len(names)} tensors)\n"
        f"  implementation vs float64 oracle: {impl_err:.3e} (worst tensors: {worst})\n"
        f"  {label} vs float64 oracle: {torch_err:.3e}\n"
        f"  tolerance broken: {k} * {torch_err:.3e} + floor {floor:.3e} = {allowed:.3e}"))


# --------------------------------------------------------------------------------------------------- assertions
def assert_close(actual: ArrayLike, expected: ArrayLike, *, component: str,
                 config: Mapping[str, Any] | None = None, rtol: float | None = None, atol: float | None = None,
                 dtype: torch.dtype | None = None, grad: bool = False, where: ArrayLike | None = None,
                 sensitivity: Callable[[], ArrayLike] | None = None, expected_from_impl: bool = False) -> None:
    """The direct rule (:func:`judge` with ``rule="direct"``) in float64 with the tolerance of ``dtype`` (default
    ``actual``'s) or the given rtol/atol; raises the verdict's message, followed by
    ``torch.testing.assert_close``'s own mismatch report (:class:`WrongOutput` for an ``actual`` that is no tensor or
    array, or has another shape). ``expected_from_impl``: ``expected`` is the implementation's own output (eager
    against compiled, its own float64, its own children composed), so a NaN/inf in it is the implementation's
    finding (:class:`NonFiniteOutput`), not a non-finite reference.

    ``where`` selects the elements to compare (others are ignored). ``sensitivity`` widens each element's
    allowance to ``COND_FACTOR * sensitivity`` where that is larger (``reference.judge.conditioning``).
    """
    __tracebackhide__ = True
    if (rtol is None) != (atol is None):
        raise ValueError("give rtol and atol together or not at all")
    if (bad := _output_verdict(actual, expected, describe(component, config))) is not None:
        raise WrongOutput(bad.message())
    if dtype is None:
        dtype = actual.dtype if isinstance(actual, torch.Tensor) else torch.float64
    if rtol is None or atol is None:
        rtol, atol = (tolerances.grad_tol if grad else tolerances.value_tol)(dtype)
    a, e = to_f64(actual), to_f64(expected)
    check_reference_finite(e, what="expected value", component=component, config=config, where=where,
                           from_impl=expected_from_impl)
    v = judge(a, e, dtype=dtype, rule="direct", grad=grad, where=where, sensitivity=sensitivity, rtol=rtol,
              atol=atol, component=component, config=config)
    if v.ok:
        return
    if v.rule != "shape":  # torch's own report of the mismatched elements, after ours
        if where is not None:
            keep = keep_mask(where, a)
            a, e = torch.where(keep, a, torch.zeros_like(a)), torch.where(keep, e, torch.zeros_like(e))
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, equal_nan=False, msg=lambda generated: (
            v.message() + "\n" + "\n".join("  " + line for line in generated.splitlines())))
    raise AssertionError(v.message())


def assert_error_ratio(actual: ArrayLike, torch_out: ArrayLike, oracle: ArrayLike, *, component: str,
                       dtype: torch.dtype, config: Mapping[str, Any] | None = None, k: float = tolerances.K,
                       where: ArrayLike | None = None, label: str = "torch",
                       sensitivity: Callable[[], ArrayLike] | None = None,
                       cond_factor: float | None = None) -> tuple[ErrorStats, ErrorStats]:
    """The error-ratio rule (:func:`judge` with ``rule="ratio"``): ``err(impl, oracle) <= k * err(torch, oracle) +
    floor(dtype, scale)``, or, where ``sensitivity`` is given, the conditioning bound if larger (``cond_factor``
    times the spread, ``COND_FACTOR`` unless given). Raises the
    verdict's message; a non-finite oracle or torch output at a compared element is a test error
    (:class:`NonFiniteReference`). Returns both error figures (for reports).
    """
    __tracebackhide__ = True
    if (bad := _output_verdict(actual, oracle, describe(component, config))) is not None:
        raise WrongOutput(bad.message())  # before ``where`` (often shaped like ``actual``) meets the references
    check_reference_finite(oracle, what="float64 oracle", component=component, config=config, where=where)
    check_reference_finite(torch_out, what=f"{label} output", component=component, config=config, where=where)
    v = judge(actual, oracle, dtype=dtype, torch_out=torch_out, rule="ratio", where=where, sensitivity=sensitivity,
              k=k, component=component, config=config, label=label, cond_factor=cond_factor)
    if not v.ok or v.stats is None or v.torch_stats is None:
        raise AssertionError(v.message())
    return v.stats, v.torch_stats


def assert_l2_error_ratio(actual: Mapping[str, ArrayLike], torch_out: Mapping[str, ArrayLike],
                          oracle: Mapping[str, ArrayLike], *, component: str, dtype: torch.dtype,
                          config: Mapping[str, Any] | None = None, k: float = tolerances.K,
                          label: str = "torch", floor_eps: float | None = None) -> tuple[float, float]:
    """:func:`judge_l2`, raising its message; returns (implementation error, torch error)."""
    __tracebackhide__ = True
    for n in oracle:
        if (bad := _output_verdict(actual.get(n), oracle[n], f"{describe(component, config)}, {n}")) is not None:
            raise WrongOutput(bad.message())
        check_reference_finite(oracle[n], what=f"float64 oracle of {n}", component=component, config=config)
        check_reference_finite(torch_out[n], what=f"{label} value of {n}", component=component, config=config)
    v = judge_l2(actual, torch_out, oracle, dtype=dtype, k=k, floor_eps=floor_eps, component=component,
                 config=config, label=label)
    if not v.ok or v.torch_abs is None:
        raise AssertionError(v.message())
    return v.max_abs, v.torch_abs
