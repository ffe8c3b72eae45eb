"""16-bit differential diagnosis: when a float16/bfloat16 check fails, is it the formula or the arithmetic?

The same module (a deep copy moved to float32; a plain function as it is) is re-run on the same inputs upcast to
float32 (exact: every 16-bit value is a float32), and its result cast back to the 16-bit dtype is judged by the same
rule as the failed check. Within the rule: the formula is right and the failure is 16-bit arithmetic ("computes in
float16"); still failing: a wrong formula, not a precision problem. Both runs are traced op by op
(``TorchFunctionMode``) to name where the 16-bit run leaves the dtype's range: the first op that turns finite inputs
into inf/NaN (overflow; with the float32 run's magnitude there against ``finfo.max``; a mask fill near
``finfo.min`` only where NaN follows), and the op with the largest share of rows whose float32 values lie wholly
below the dtype's smallest normal (underflow).

:func:`diagnose` (error-ratio checks), :func:`diagnose_check` (property checks such as "masked keys weigh 0") return
one line; :func:`explained` wraps a test's assertion and appends that line to its message. The diagnosis never
changes a verdict: it only words it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from reference.judge import tolerances
from reference.judge.compare import NonFiniteReference, WrongOutput, judge, judge_l2

__all__ = ["SIXTEEN_BIT", "diagnose", "diagnose_check", "explained", "float32_copy", "is_16bit"]

SIXTEEN_BIT = (torch.float16, torch.bfloat16)
#: What the message advises when the formula holds in float32.
ADVICE = "compute in float32 and cast the result back, as nn.LayerNorm and torch's attention kernels accumulate"
#: Ops (names without their underscores) not listed among the 16-bit arithmetic: moves, casts, fills, and linear
#: layers (torch runs those in 16 bits too).
_NO_ARITHMETIC = {"to", "float", "half", "bfloat16", "type", "view", "reshape", "transpose", "permute", "contiguous",
                  "expand", "expand_as", "flip", "unsqueeze", "squeeze", "getitem", "clone", "detach", "split",
                  "chunk", "unbind", "flatten", "unflatten", "select", "narrow", "masked_fill", "zeros_like",
                  "ones_like", "full_like", "empty_like", "new_zeros", "cat", "stack", "t", "nan_to_num", "where",
                  "linear", "requires_grad"}
#: A float32 magnitude at least this is a sentinel (a mask fill such as ``finfo.min``), not a computed value: its
#: 16-bit counterpart overflowing to -inf is harmless before a softmax, so it is reported only where NaN follows.
SENTINEL = float(torch.finfo(torch.float32).max) / 4

Call = Callable[..., Any]


def is_16bit(dtype: torch.dtype | None) -> bool:
    return dtype in SIXTEEN_BIT


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """``value`` (tensors, nested tuples/lists/dicts) with every floating tensor cast to ``dtype``."""
    return tree_map(lambda t: t.detach().to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t,
                    value)


def float32_copy(target: nn.Module | Call) -> nn.Module | Call:
    """A deep copy of a module moved to float32 (tensors a forward left on it, e.g. ``attention_scores`` with a
    graph, are detached first so the copy is possible); a plain function as it is."""
    if not isinstance(target, nn.Module):
        return target
    memo: dict[int, Any] = {}
    for m in target.modules():
        for value in vars(m).values():
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(target, memo).to(torch.float32)


def _default_call(target: Call, *inputs: Any) -> Any:
    return target(*inputs)


def _grad_mode(grad: bool) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if grad else torch.no_grad()


# --------------------------------------------------------------------------------------------------- tracing
@dataclass
class _Op:
    """One op's floating result: its name, dtype, finite max |v|, non-finite count, rows wholly below ``tiny``."""

    name: str
    dtype: torch.dtype
    max_abs: float
    max_computed: float  # max |v| over finite values below ``SENTINEL``
    nonfinite: int
    nan: int
    inputs_finite: bool
    tiny_rows: int
    rows: int
    tiny_max: float  # the largest row max |v| among those rows (how far below tiny they sit)


class _Trace(TorchFunctionMode):
    """Records every torch op's first floating tensor result (``tiny``: the smallest normal of the 16-bit dtype)."""

    def __init__(self, tiny: float) -> None:
        super().__init__()
        self.tiny = tiny
        self.ops: list[_Op] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func)).strip("_") or str(func)
        floats = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
        recorded = name not in ("get", "set") and "__get__" not in repr(func)
        finite_in = all(bool(torch.isfinite(t).all()) for t in floats) if recorded else True
        out = func(*args, **kwargs)
        if recorded:
            first = next((t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)), None)
            if first is not None and first.is_floating_point() and first.numel():
                self._record(name, first.detach(), finite_in)
        return out

    def _record(self, name: str, t: torch.Tensor, finite_in: bool) -> None:
        a = t.abs().to(torch.float64)
        finite = torch.isfinite(a)
        rows = a.reshape(-1, a.shape[-1]) if a.dim() else a.reshape(1, 1)
        row_max = torch.where(torch.isfinite(rows), rows, torch.zeros_like(rows)).amax(dim=-1)
        low = (row_max > 0) & (row_max < self.tiny)
        zero = torch.zeros_like(a)
        self.ops.append(_Op(name, t.dtype, float(torch.where(finite, a, zero).max()),
                            float(torch.where(finite & (a < SENTINEL), a, zero).max()),
                            int((~finite).sum()), int(torch.isnan(a).sum()), finite_in, int(low.sum()),
                            int(rows.shape[0]),
                            float(row_max[low].max()) if bool(low.any()) else 0.0))


def _traced(call: Call, target: Any, inputs: Sequence[Any], tiny: float, grad: bool) -> tuple[Any, list[_Op]]:
    """``call(target, *inputs)`` traced; the implementation's warnings were already shown by the checked run."""
    with _grad_mode(grad), warnings.catch_warnings(), _Trace(tiny) as trace:
        warnings.simplefilter("ignore")
        out = call(target, *inputs)
    return out, trace.ops


def _range_findings(ops16: list[_Op], ops32: list[_Op] | None, dtype: torch.dtype) -> list[str]:
    """Where the 16-bit run leaves ``dtype``'s range: the first overflow, the first underflow."""
    info, dt = torch.finfo(dtype), _name(dtype)
    findings = []
    for i, op in enumerate(ops16):
        if op.nonfinite and op.inputs_finite:
            at32 = ops32[i].max_computed if ops32 is not None else None
            if at32 is not None and at32 <= info.max and not ops32[i].nonfinite:
                # Only a sentinel (a mask fill near finfo.min) left the range: -inf before a softmax is harmless,
                # unless NaN follows where float32 has none (a row of nothing but -inf).
                nan = next((j for j in range(i + 1, len(ops16)) if ops16[j].nan > ops32[j].nan), None)
                if nan is None:
                    continue
                findings.append(f"{dt} overflows at `{op.name}` (op {i + 1} of {len(ops16)}: a fill value near "
                                f"{dt}'s limit {info.min:.6g} plus a score passes it, {op.nonfinite} -inf), and "
                                f"NaN follows at `{ops16[nan].name}` (op {nan + 1}) where float32 has none")
                break
            reach = (f"; in float32 its values reach {at32:.3g}, past {dt}'s largest {info.max:.6g}"
                     if at32 is not None and at32 > info.max else "")
            findings.append(f"{dt} overflows at `{op.name}` (op {i + 1} of {len(ops16)}: {op.nonfinite} inf/NaN "
                            f"from finite inputs{reach})")
            break
    if ops32 is not None:  # the op with the largest share of rows below tiny (then the deepest): the worst one
        low = [(op32.tiny_rows / op32.rows, -op32.tiny_max, -i) for i, (op, op32) in enumerate(zip(ops16, ops32))
               if op.dtype == dtype and op32.tiny_rows]
        if low:
            i = -max(low)[2]
            op32 = ops32[i]
            findings.append(f"{dt} underflows at `{op32.name}` (op {i + 1} of {len(ops16)}: in float32 "
                            f"{op32.tiny_rows} of {op32.rows} rows lie wholly below {dt}'s smallest normal "
                            f"{info.tiny:.2g}, the largest of them {op32.tiny_max:.2g})")
    return findings


def _arithmetic(ops16: list[_Op], dtype: torch.dtype) -> str:
    names = list(dict.fromkeys(op.name for op in ops16 if op.dtype == dtype and op.name not in _NO_ARITHMETIC))
    return ", ".join(f"`{n}`" for n in names[:8]) + (", ..." if len(names) > 8 else "")


def _input_scale(inputs: Sequence[Any]) -> float:
    floats = [t for t in tree_flatten(list(inputs))[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return max((float(t.detach().abs().max()) for t in floats if t.numel()), default=0.0)


def _run_both(target: nn.Module | Call, inputs: Sequence[Any], dtype: torch.dtype, call: Call, grad: bool
              ) -> tuple[Any, Any, nn.Module | Call, list[_Op], list[_Op] | None]:
    """(float32 result, cast back, float32 copy, 16-bit trace, float32 trace when the op sequences align)."""
    tiny = float(torch.finfo(dtype).tiny)
    _, ops16 = _traced(call, target, inputs, tiny, grad)
    target32 = float32_copy(target)
    out32, ops32 = _traced(call, target32, _cast(list(inputs), torch.float32), tiny, grad)
    aligned = ops32 if [o.name for o in ops32] == [o.name for o in ops16] else None
    return out32, _cast(out32, dtype), target32, ops16, aligned


def _sixteen_bit_text(dtype: torch.dtype, ops16: list[_Op], ops32: list[_Op] | None, inputs: Sequence[Any],
                      held: str) -> str:
    dt = _name(dtype)
    arith = _arithmetic(ops16, dtype)
    if not arith:
        return (f"fails only in {dt}, though its {dt} run computes in float32 (no {dt} arithmetic beyond casts and "
                f"linear layers traced): {held}; look for a path that depends on the dtype (a branch, a cast, a "
                f"constant)")
    text = f"computes in {dt} ({dt} arithmetic in {arith}): {held}"
    findings = _range_findings(ops16, ops32, dtype)
    if findings:
        text += "; " + "; ".join(findings) + f"; the inputs reach |x| = {_input_scale(inputs):.3g}"
    else:
        text += f"; no overflow or underflow: the rounding of {dt} intermediates"
    return text + f"; fix: {ADVICE}"


def _times(v: Any, dtype: str) -> str:
    """``"0.9x torch's float16 error"``, or the error itself where torch's is 0 (or not measured)."""
    r = v.ratio
    if r is None or math.isinf(r):
        return f"{v.max_abs:.3g} where torch's {dtype} error is {v.torch_abs or 0:.3g}"
    return f"{r:.2f}x torch's {dtype} error" if r < 10 else f"{r:.3g}x torch's {dtype} error"


def diagnose(target: nn.Module | Call, inputs: Sequence[Any], *, dtype: torch.dtype,
             oracle: Any, torch_out: Any, call: Call | None = None, torch_call: Call | None = None,
             where: Any = None, k: float = tolerances.K, l2: bool = False, floor_eps: float | None = None,
             grad: bool = False) -> str:
    """One line: why ``target`` (a module or function, run as ``call(target, *inputs)``, default ``target(*inputs)``;
    under no_grad unless ``grad``) failed the error-ratio rule in the 16-bit ``dtype`` against ``oracle`` with
    torch's result ``torch_out``. The float32 re-run, cast back to ``dtype``, is judged by the same rule (``where``,
    ``k``; the relative-L2 rule of ``judge_l2`` with ``l2``, results and references then mappings of tensors).
    ``torch_call(target32, *inputs32)``, if given, is torch's float32 counterpart, for the float32 error ratio."""
    call = call or _default_call
    dt = _name(dtype)
    try:
        out32, back, target32, ops16, ops32 = _run_both(target, inputs, dtype, call, grad)

        def verdict(result: Any, d: torch.dtype, reference: Any):
            if l2:
                return judge_l2(result, reference, oracle, dtype=d, k=k, floor_eps=floor_eps)
            return judge(result, oracle, dtype=d, torch_out=reference, rule="ratio", where=where, k=k)

        v_back = verdict(back, dtype, torch_out)
        v32 = None
        if torch_call is not None:
            with _grad_mode(grad):
                v32 = verdict(out32, torch.float32, torch_call(target32, *_cast(list(inputs), torch.float32)))
    except Exception as exc:  # noqa: BLE001 - a diagnosis must never replace the failure it explains
        return f"16-bit diagnosis unavailable: the float32 re-run raised {type(exc).__name__}: {exc}"
    ratio = _times(v_back, dt)
    if v_back.ok:
        held = (f"with float32 accumulation (the same module re-run in float32, cast back to {dt}) the error is "
                f"{ratio}, within the tolerance, so the formula is right")
        text = _sixteen_bit_text(dtype, ops16, ops32, inputs, held)
        if v32 is not None and not v32.ok:
            text += f"; but in float32 itself its error is {_times(v32, 'float32')}"
        return "16-bit diagnosis: " + text
    if v32 is not None:
        f32 = f"error {_times(v32, 'float32')}" + ("" if not v32.ok else ", within float32's tolerance")
    else:
        f32 = "no float32 counterpart measured"
    return (f"16-bit diagnosis: a wrong formula, not a precision problem: stays wrong in float32 ({f32}; cast back "
            f"to {dt}, {ratio})")


def diagnose_check(target: nn.Module | Call, inputs: Sequence[Any], *, dtype: torch.dtype,
                   check: Callable[[Any], str | None], call: Call | None = None, grad: bool = False) -> str:
    """One line, for a property check (no oracle): ``check(result)`` returns what fails, or None when the property
    holds, on ``call(target, *inputs)``'s result; it is applied to the float32 re-run's result cast back."""
    call = call or _default_call
    try:
        _, back, _, ops16, ops32 = _run_both(target, inputs, dtype, call, grad)
        failure = check(back)
    except Exception as exc:  # noqa: BLE001
        return f"16-bit diagnosis unavailable: the float32 re-run raised {type(exc).__name__}: {exc}"
    if failure is None:
        held = (f"with float32 accumulation (the same module re-run in float32, cast back to {_name(dtype)}) the "
                f"property holds, so the formula is right")
        return "16-bit diagnosis: " + _sixteen_bit_text(dtype, ops16, ops32, inputs, held)
    return f"16-bit diagnosis: a wrong formula, not a precision problem: stays wrong in float32 ({failure})"


@contextlib.contextmanager
def explained(dtype: torch.dtype, diagnosis: Callable[[], str]) -> Iterator[None]:
    """Run an assertion; when it fails in a 16-bit ``dtype``, append ``diagnosis()`` (lazy: only on failure) to its
    message. The exception, its type and traceback are kept; a :class:`NonFiniteReference` or :class:`WrongOutput`
    is left as it is (no precision explains a wrong type or shape)."""
    try:
        yield
    except (NonFiniteReference, WrongOutput):
        raise
    except AssertionError as exc:
        if is_16bit(dtype):
            try:
                text = diagnosis()
            except Exception as err:  # noqa: BLE001 - never replace the failure being explained
                text = f"16-bit diagnosis unavailable: {type(err).__name__}: {err}"
            exc.args = (f"{exc}\n  {text}",)
        raise

