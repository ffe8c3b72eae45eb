"""Where does a mismatch start? The first contract submodule whose output leaves tolerance, by its dotted path.

``localize(model, src, tgt, src_mask, tgt_mask)`` runs three things side by side on the same inputs and weights:

1. **the implementation**, with forward hooks on every contract submodule (``reference.report.hooks``), recording each
   call's inputs and output in execution order;
2. **the float64 NumPy oracle** (``reference.oracles.numpy_ref``) on the model's own weights, which records every submodule
   output under the dotted path a hook gives it (``"encoder.layers.0.self_attention_block"``);
3. **the torch twin** (``torch_ref.Twin``): the same computation written with torch's own kernels (``F.embedding``,
   ``F.layer_norm``, ``F.linear``, ``F.relu``, ``F.scaled_dot_product_attention``) in the model's dtype, traced by
   the same paths.
   Its error against the oracle is *torch's own error* at that path.

Tolerance (``compare.judge``, the kit's one judge): float64, and any path without a finite torch figure, uses the
direct rule ``|impl - oracle| <= atol + rtol * |oracle|`` with ``tolerances.VALUE_TOL``; lower precision uses the
error-ratio rule ``max|impl - oracle| <= K * max|twin - oracle| + floor(dtype, scale)``
(``tolerances.allowed_error``), path by path. The twin is used rather than hooks on ``nn.Transformer`` because it has a counterpart for every contract path
(embeddings, positions, each norm, each residual, projection), and ``nn.TransformerEncoderLayer``'s fast path skips
its submodules' hooks.

The **first divergence** is the first failing path in the implementation's execution order. For it a **local
check** re-runs the oracle (and the twin) on the implementation's *own* captured inputs to that submodule (the
registry's ``apply`` of its component): if the submodule is right on them, it was fed a wrong input by whatever
called it (its parent's ``forward``); otherwise the submodule itself is wrong. Inputs should keep at least one
visible key per query row: the contract leaves the values of fully masked rows open, so a divergence there is
reported with a note, not explained.

A **differential check** then confirms the attribution: the culprit is swapped for the reference (its torch
formula on its own weights, ``swapped_for_reference``) and the whole model re-run. If the model then agrees with
the oracle, every later divergence followed from the culprit (one root); if it still diverges, the next first
divergence is localised and swapped in turn (up to ``MAX_SWAPS``): each culprit the chain swaps is a root of its own
(two independent bugs, two roots).

Hyper-parameters are the caller's (``localize(..., h=..., eps=...)``: what the model was built with, ``eps``
defaulting to the contract's ``CONTRACT_EPS``), never read back from the model: a norm that stored a wrong ``eps``
is a divergence at that norm, not the yardstick.

Shapes: B batch, Ls / Lt source / target lengths, d = d_model, h heads.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from reference.oracles import numpy_ref, torch_ref
from reference.judge.compare import Verdict, judge
from reference.kit.components import BY_CONTRACT
from reference.report.hooks import CONTRACT_CLASSES, Call, contract_class, main_output, record_calls
from reference.oracles.masks import has_fully_masked_row
from reference.oracles.numpy_ref import CONTRACT_EPS
from reference.spec import variants
from reference.kit.weights import contract_weights, to_numpy


@dataclass(frozen=True)
class HParams:
    """The hyper-parameters the oracle and the twin compute with: the caller's, never read from the model."""

    h: int  # heads of every attention block
    eps: float = CONTRACT_EPS  # of every LayerNormalization


WEIGHTS_SUFFIX = numpy_ref.WEIGHTS_SUFFIX
join = numpy_ref.join


# --------------------------------------------------------------------------------------------------- local check
def _np(x: Any) -> Any:
    return to_numpy(x) if isinstance(x, torch.Tensor) else x


def _local_reference(call: Call, calls: Sequence[Call], hp: HParams
                     ) -> tuple[np.ndarray, torch.Tensor | None] | None:
    """(oracle, twin) outputs of ``call``'s submodule on its own captured inputs, with ``hp`` (the registry's
    ``apply`` of its component); None where not expressible."""
    module, inputs = call.module, call.inputs
    if call.kind == "ResidualConnection":
        # x + sublayer(norm(x)) with the implementation's own sublayer output: the call that finished last
        # before this one and is not this residual's norm.
        earlier = [c for c in calls[:call.order] if c.path != f"{call.path}.norm"]
        if not inputs or not earlier or not isinstance(main_output(earlier[-1].output), torch.Tensor):
            return None
        x, sub_out = inputs[0], main_output(earlier[-1].output)
        return _np(x) + _np(sub_out), x + sub_out
    info = BY_CONTRACT.get(call.kind)
    if info is None or info.apply is None:
        return None
    w64 = contract_weights(module)[0]
    wt = {name: p.detach() for name, p in module.named_parameters()}
    with torch.no_grad():
        return (info.apply(numpy_ref, tuple(_np(i) for i in inputs), w64, hp.h, hp.eps),
                info.apply(torch_ref, tuple(inputs), wt, hp.h, hp.eps))


@dataclass(frozen=True)
class LocalCheck:
    """The first divergent submodule re-run by the oracle on the implementation's own inputs to it.

    ``culprit``: the path whose own code is blamed: the submodule itself when it is wrong on its own inputs, else
    the innermost enclosing contract module that is wrong on *its* own inputs (its ``forward`` fed the submodule a
    wrong value); ``""`` (the model's ``encode``/``decode``/``project``) when every enclosing module is right.
    """

    path: str
    max_abs: float
    tolerance: str
    ok: bool  # True: right on its own inputs
    verdict: str
    culprit: str | None = None


def _judge_locally(call: Call, calls: Sequence[Call], dtype: torch.dtype, hp: HParams, *, scores: bool = False
                   ) -> Verdict | str:
    try:
        if scores:  # an attention block's attention_scores against the oracle's weights on its own inputs
            q, k, v, mask = (list(call.inputs) + [None] * 4)[:4]
            w64, wt = contract_weights(call.module)[0], {n: p.detach() for n, p in call.module.named_parameters()}
            oracle = numpy_ref.multi_head_attention(_np(q), _np(k), _np(v), _np(mask), w64, hp.h)[1]
            with torch.no_grad():
                twin = torch_ref.multi_head_attention(q, k, v, mask, wt, hp.h)[1]
            return judge(call.attention, oracle, dtype=dtype, torch_out=twin)
        ref = _local_reference(call, calls, hp)
    except Exception as exc:  # a malformed implementation: say so rather than hide the localisation
        return f"not possible ({type(exc).__name__}: {exc})"
    if ref is None:
        return "not possible for this call"
    oracle, twin = ref
    return judge(main_output(call.output), oracle, dtype=dtype, torch_out=twin)


def _ancestors(path: str) -> list[str]:
    """Enclosing module paths, innermost first: ``a.b.c`` -> ``[a.b, a]``."""
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def local_check(call: Call, calls: Sequence[Call], dtype: torch.dtype, hp: HParams, *, scores: bool = False
                ) -> LocalCheck:
    """Is ``call``'s submodule wrong, or was it fed a wrong input (and by whom)? See the module docstring.

    ``hp``: the hyper-parameters the model was built with. ``scores``: judge the block's ``attention_scores``
    instead of its output.
    """
    v = _judge_locally(call, calls, dtype, hp, scores=scores)
    what = f"{call.kind} at {call.path}" + (" (its attention_scores)" if scores else "")
    if isinstance(v, str):
        return LocalCheck(call.path, math.nan, "", False, f"local check of {what} {v}")
    if not v.ok:
        return LocalCheck(call.path, v.max_abs, v.tolerance, False,
                          f"{what} is wrong: on its own inputs it still differs from the oracle ({v.line()})",
                          culprit=call.path)
    first_call = {}
    for c in calls:
        first_call.setdefault(c.path, c)
    culprit = ""
    for parent in _ancestors(call.path):
        if parent in first_call:
            pv = _judge_locally(first_call[parent], calls, dtype, hp)
            if isinstance(pv, Verdict) and not pv.ok:
                culprit = parent
                break
    by = (f"{first_call[culprit].kind} at {culprit} (wrong on its own inputs: its forward feeds {call.path} a wrong "
          f"value)" if culprit else "the model's encode/decode/project (every enclosing block is right on its "
          "own inputs)")
    return LocalCheck(call.path, v.max_abs, v.tolerance, True,
                      f"{call.kind} at {call.path} is right on its own inputs (max abs {v.max_abs:.2e}): it was fed a "
                      f"wrong input, by {by}", culprit=culprit)


def _local_check_raised(call: Call, calls: Sequence[Call], hp: HParams) -> LocalCheck:
    """A submodule raised: does the oracle accept its inputs (then it is wrong) or fail on them too (then it was
    fed inconsistent inputs, by the nearest enclosing contract module, or by the model's encode/decode/project)?"""
    try:
        _local_reference(call, calls, hp)
    except Exception as exc:
        # the nearest enclosing contract module in the module tree (a residual around it only calls the block's
        # closure, so the block that owns the submodule is the one that wired its inputs)
        culprit = next((a for a in _ancestors(call.path) if a in call.enclosing), "")
        return LocalCheck(call.path, math.nan, "", True,
                          f"{call.kind} at {call.path} raised {call.error}; the oracle fails on the same inputs "
                          f"({type(exc).__name__}: {exc}): it was fed inconsistent inputs, by "
                          f"{culprit or 'the model' + chr(39) + 's encode/decode/project'}", culprit=culprit)
    return LocalCheck(call.path, math.nan, "", False,
                      f"{call.kind} at {call.path} raised {call.error} on inputs the oracle accepts: it is wrong",
                      culprit=call.path)


# --------------------------------------------------------------------------------------------------- differential
#: How many culprits the differential check swaps in a row before it stops (each one a root).
MAX_SWAPS = 3


def _reference_forward(module: nn.Module, kind: str, hp: HParams) -> Any:
    """A forward computing ``kind``'s reference (torch's kernels, ``module``'s own weights, ``hp``), or None. An
    attention block keeps the reference weights in ``attention_scores``, as the contract's does."""
    weights = {name: p.detach() for name, p in module.named_parameters()}
    if kind == "ResidualConnection":
        norm = numpy_ref.sub(weights, "norm")
        if "alpha" not in norm or "bias" not in norm:
            return None

        def residual(x: torch.Tensor, sublayer: Any) -> torch.Tensor:
            if variants.variant() == variants.POST_NORM:
                return torch_ref.layer_norm(x + sublayer(x), norm["alpha"], norm["bias"], hp.eps)
            return x + sublayer(torch_ref.layer_norm(x, norm["alpha"], norm["bias"], hp.eps))
        return residual
    if kind == "MultiHeadAttentionBlock":
        def attention(*inputs: Any) -> torch.Tensor:
            out, module.attention_scores = torch_ref.multi_head_attention(*(list(inputs) + [None] * 4)[:4],
                                                                          weights, hp.h)
            return out
        return attention
    info = BY_CONTRACT.get(kind)
    if info is None or info.apply is None:
        return None
    return lambda *inputs: info.apply(torch_ref, tuple(inputs), weights, hp.h, hp.eps)


def same_code(model: nn.Module, path: str) -> list[str]:
    """The paths of every submodule of ``model`` of the same class as the one at ``path`` (its code: a wrong
    formula is wrong in every instance)."""
    cls = type(dict(model.named_modules())[path])
    return [p for p, m in model.named_modules() if p and type(m) is cls]


@contextlib.contextmanager
def swapped_for_reference(model: nn.Module, paths: Sequence[str], hp: HParams) -> Iterator[None]:
    """Within the block, each submodule of ``model`` at ``paths`` computes its reference instead of its own
    ``forward`` (hooks still see it). ValueError when one has no reference to swap in."""
    modules = dict(model.named_modules())
    done: list[nn.Module] = []
    try:
        for path in paths:
            kind = contract_class(modules[path])
            forward = _reference_forward(modules[path], kind, hp)
            if forward is None:
                raise ValueError(f"no reference to swap in for {kind} at {path}")
            modules[path].forward = forward
            done.append(modules[path])
        yield
    finally:
        for module in done:
            del module.forward


@dataclass(frozen=True)
class SwapCheck:
    """The model re-run with the classes of ``swapped`` (culprits, in the order found; every instance of each)
    computing their reference."""

    swapped: tuple[str, ...]
    agrees: bool  # the model agrees with the oracle everywhere
    first_divergence: str | None  # else: where it still diverges first
    verdict: str
    kinds: tuple[str, ...]  # the contract class of each swapped culprit


def _narrowed(model: nn.Module, culprit: str, args: tuple, kwargs: dict, swapped: list[str], hp: HParams) -> str:
    """A composite culprit (a block wrong on its own inputs) narrowed to the first class of contract submodule
    inside it whose swap for the reference makes the culprit right (a residual that puts its norm after the sum:
    the block's wiring is right, its ResidualConnection is not); the culprit itself when none does."""
    inside = [(p, m) for p, m in model.named_modules() if p.startswith(culprit + ".")
              and contract_class(m) in CONTRACT_CLASSES and p not in swapped]
    tried: set[type] = set()
    for path, module in inside:
        if type(module) in tried:
            continue
        tried.add(type(module))
        trial = swapped + same_code(model, path)
        try:
            with swapped_for_reference(model, trial, hp):
                again = localize(*args, **kwargs, _swapped=tuple(trial))
        except Exception:  # noqa: BLE001 (no reference for it, or the swapped model does not run: not this one)
            continue
        first = again.first_divergence
        if first is None or not (first == culprit or first.startswith(culprit + ".")):
            return path
    return culprit


def _differential(model: nn.Module, args: tuple, kwargs: dict, local: LocalCheck | None, hp: HParams
                  ) -> list[SwapCheck]:
    """Swap the culprit's class for its reference and re-run, then the next culprit's, until the model agrees."""
    checks: list[SwapCheck] = []
    culprits: list[str] = []
    kinds: list[str] = []
    paths: list[str] = []
    while local is not None and len(culprits) < MAX_SWAPS:
        culprit = local.culprit
        if not culprit or culprit in paths:
            why = (f"{culprit}, swapped for the reference, still diverges ({local.verdict})" if culprit else
                   "the model's encode/decode/project has no reference to swap in")
            checks.append(SwapCheck(tuple(culprits), False, local.path, f"differential check stops: {why}",
                                    tuple(kinds)))
            break
        culprit = _narrowed(model, culprit, args, kwargs, paths, hp)
        culprits.append(culprit)
        kinds.append(contract_class(dict(model.named_modules())[culprit]))
        paths += same_code(model, culprit)
        named = ", ".join(culprits) + (" and every module of the same class" if len(paths) > len(culprits) else "")
        try:
            with swapped_for_reference(model, paths, hp):
                again = localize(*args, **kwargs, _swapped=tuple(paths))
        except Exception as exc:  # no reference for this kind, or the swapped model does not run
            checks.append(SwapCheck(tuple(culprits), False, None,
                                    f"differential check not possible with {named} swapped ({type(exc).__name__}: "
                                    f"{exc})", tuple(kinds)))
            break
        if again.ok:
            checks.append(SwapCheck(tuple(culprits), True, None,
                                    f"with {named} swapped for the reference the model agrees with the oracle: every "
                                    "divergence follows from " + ("it" if len(culprits) == 1 else "them"),
                                    tuple(kinds)))
            break
        checks.append(SwapCheck(tuple(culprits), False, again.first_divergence,
                                f"with {named} swapped for the reference the model still diverges, first at "
                                f"{again.first_divergence}: another root"
                                + (f" ({again.local.verdict})" if again.local else ""), tuple(kinds)))
        local = again.local
    return checks


# --------------------------------------------------------------------------------------------------- localize
@dataclass(frozen=True)
class PathRow:
    """One submodule call judged against the oracle's output at the same path."""

    order: int
    path: str
    kind: str
    max_abs: float
    max_rel: float
    torch_abs: float | None
    tolerance: str
    allowed: float
    margin: float
    ok: bool
    note: str = ""


def jsonable(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by "inf", "-inf" or "nan" and tuples made lists (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


@dataclass
class Localization:
    """Every contract submodule's output judged in execution order, and where the disagreement starts."""

    dtype: str
    device: str
    rows: list[PathRow]
    first_divergence: str | None
    local: LocalCheck | None = None
    missing: list[str] = field(default_factory=list)  # oracle paths the implementation never ran
    notes: list[str] = field(default_factory=list)
    impl_outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    oracle_outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    swaps: list[SwapCheck] = field(default_factory=list)  # the differential check, culprit by culprit

    @property
    def ok(self) -> bool:
        return self.first_divergence is None

    @property
    def confirmed(self) -> bool:
        """The differential check made the model agree: its roots explain every divergence."""
        return bool(self.swaps) and self.swaps[-1].agrees

    def kind(self, path: str) -> str | None:
        """The contract class of the submodule at ``path``: as the implementation ran it, or as the differential
        check swapped it (a block that raised inside has no row of its own; each check holds every culprit so far)."""
        row = self.row(path)
        if row is not None:
            return row.kind
        return dict(zip(self.swaps[-1].swapped, self.swaps[-1].kinds)).get(path) if self.swaps else None

    @property
    def roots(self) -> list[str]:
        """The culprits the differential check swapped, when swapping them made the model agree (else the first
        culprit alone, unconfirmed; empty when nothing diverges)."""
        if self.ok:
            return []
        if self.confirmed:
            return list(self.swaps[-1].swapped)
        return [self.local.culprit] if self.local and self.local.culprit else []

    def row(self, path: str) -> PathRow | None:
        return next((r for r in self.rows if r.path == path), None)

    def to_json(self) -> dict[str, Any]:
        """Plain, strict JSON data (non-finite numbers written as the strings "inf", "-inf", "nan")."""
        return jsonable({"dtype": self.dtype, "device": self.device, "first_divergence": self.first_divergence,
                         "local_check": asdict(self.local) if self.local else None,
                         "differential": [asdict(c) for c in self.swaps], "roots": self.roots,
                         "missing": list(self.missing),
                         "notes": list(self.notes), "paths": [asdict(r) for r in self.rows]})

    def summary(self, *, all_rows: bool = False) -> str:
        """Text for a failure message: the first divergence, the local check, and the error through every path
        from the first divergence on (every path with ``all_rows``)."""
        head = (f"localisation ({self.device}, {self.dtype}): "
                + ("every contract submodule agrees with the float64 oracle" if self.ok
                   else f"first divergence at {self.first_divergence}"))
        lines = [head]
        if self.local is not None:
            lines.append(f"  local check: {self.local.verdict}")
        lines += [f"  differential check: {c.verdict}" for c in self.swaps]
        lines += [f"  note: {n}" for n in self.notes]
        if self.missing:
            lines.append(f"  never executed by the implementation: {', '.join(self.missing)}")
        start = 0 if all_rows or self.ok else next((i for i, r in enumerate(self.rows) if not r.ok), 0)
        shown = self.rows[start:]
        if shown:
            width = max(len(r.path) for r in shown)
            lines.append(f"  {'path'.ljust(width)}  {'max abs':>9}  {'max rel':>9}  {'torch abs':>9}  "
                         f"{'allowed':>9}  result")
            for r in shown:
                torch_abs = f"{r.torch_abs:9.2e}" if r.torch_abs is not None else f"{'-':>9}"
                lines.append(f"  {r.path.ljust(width)}  {r.max_abs:9.2e}  {r.max_rel:9.2e}  {torch_abs}  "
                             f"{r.allowed:9.2e}  {'ok' if r.ok else 'FAIL'}{'  ' + r.note if r.note else ''}")
        return "\n".join(lines)


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    p = next(model.parameters())
    return p.dtype, p.device


def localize(model: nn.Module, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None = None,
             tgt_mask: torch.Tensor | None = None, *, h: int, eps: float = CONTRACT_EPS,
             dtype: torch.dtype | None = None, N: int | None = None, d_ff: int | None = None,
             differential: bool = True, _swapped: tuple[str, ...] = ()) -> Localization:
    """Judge every contract submodule of ``model`` on ``project(decode(encode(src, src_mask), ...))``.

    src Long[B, Ls], tgt Long[B, Lt]; masks None or bool broadcastable to [B, h, Lq, Lk] (True = may attend), on
    the model's device. ``h``: the head count the model was built with (``build_transformer(..., h=h)``); ``eps``:
    its norms' (the contract's default unless built otherwise); neither is read from the model, nor are ``N`` and
    ``d_ff`` when given (the oracle raises ``numpy_ref.StructureMismatch`` if the model holds others). ``dtype``
    sets the tolerance (default: the model's parameter dtype). Dropout is switched off for the run (``eval()``) and the
    model's mode restored afterwards. ``differential``: confirm the culprit by swapping it for its reference and
    re-running (``Localization.swaps``, ``roots``).
    """
    hp = HParams(h, eps)
    model_dtype, device = _model_dtype_device(model)
    dtype = dtype or model_dtype
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, calls = record_calls(model, lambda: model.project(
                model.decode(model.encode(src, src_mask), src_mask, tgt, tgt_mask)))
            twin = torch_ref.trace(model, src, tgt, src_mask, tgt_mask, h=hp.h, eps=hp.eps)
    finally:
        model.train(was_training)
    weights, param_notes = contract_weights(model)
    oracle: dict[str, np.ndarray] = {}
    numpy_ref.transformer(to_numpy(src), to_numpy(tgt), to_numpy(src_mask), to_numpy(tgt_mask),
                          weights, hp.h, hp.eps, trace=oracle, N=N, d_ff=d_ff)

    rows: list[PathRow] = []
    impl_outputs: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    no_scores = []
    for call in calls:
        out = main_output(call.output)
        if call.error:
            rows.append(PathRow(call.order, call.path, call.kind, math.inf, math.inf, None, "", 0.0, math.inf,
                                False, f"raised {call.error}"))
            continue
        if call.path in seen:
            note = "called again (only the first call is judged)"
            rows.append(PathRow(call.order, call.path, call.kind, math.nan, math.nan, None, "", math.nan, math.nan,
                                True, note))
            continue
        seen.add(call.path)
        if isinstance(out, torch.Tensor):
            impl_outputs[call.path] = to_numpy(out)
        if call.path not in oracle:
            rows.append(PathRow(call.order, call.path, call.kind, math.nan, math.nan, None, "", math.nan, math.nan,
                                True, "no counterpart in the oracle"))
            continue
        if not isinstance(out, torch.Tensor):
            rows.append(PathRow(call.order, call.path, call.kind, math.inf, math.inf, None, "", 0.0, math.inf,
                                False, f"returned {type(out).__name__}, not a tensor"))
            continue
        v = judge(out, oracle[call.path], dtype=dtype, torch_out=twin.get(call.path))
        note = "; ".join(n for n in (v.note, param_notes.get(call.path, "")) if n)
        ok = v.ok and not (call.path in param_notes and "lacks" in param_notes[call.path])
        rows.append(PathRow(call.order, call.path, call.kind, v.max_abs, v.max_rel, v.torch_abs, v.tolerance,
                            v.allowed, v.margin, ok, note))
        key = call.path + WEIGHTS_SUFFIX
        if key in oracle:  # the contract's attention_scores, judged right after the block's output
            if call.attention is None:
                no_scores.append(call.path)
                continue
            impl_outputs[key] = to_numpy(call.attention)
            v = judge(call.attention, oracle[key], dtype=dtype, torch_out=twin.get(key))
            rows.append(PathRow(call.order, key, "attention_scores", v.max_abs, v.max_rel, v.torch_abs, v.tolerance,
                                v.allowed, v.margin, v.ok, v.note))

    raised = any(c.error for c in calls)
    inside_swapped = tuple(p + "." for p in _swapped)  # a swapped module's reference runs none of its children
    missing = [] if raised else [p for p in oracle if not p.endswith(WEIGHTS_SUFFIX) and p not in seen
                                 and not p.startswith(inside_swapped)]
    first = next((r for r in rows if not r.ok), None)
    first_path = first.path if first else (missing[0] if missing else None)
    local = None
    if first is not None and "lacks contract parameter" in first.note:
        local = LocalCheck(first.path, math.nan, "", False, f"{first.kind} at {first.path} {first.note}",
                           culprit=first.path)
    elif first is not None and calls[first.order].error:
        local = _local_check_raised(calls[first.order], calls, hp)
    elif first is not None:
        local = local_check(calls[first.order], calls, dtype, hp, scores=first.kind == "attention_scores")
    notes = []
    if raised:
        notes.append("the forward raised; submodules after the failing one never ran")
    if no_scores:
        notes.append(f"no attention_scores after {', '.join(no_scores)}: attention weights not judged")
    if has_fully_masked_row(src_mask) or has_fully_masked_row(tgt_mask):
        notes.append("the masks fully mask some query rows, whose values the contract leaves open")
    swaps = []
    if differential and not _swapped and first_path is not None:
        swaps = _differential(model, (model, src, tgt, src_mask, tgt_mask),
                              {"h": h, "eps": eps, "dtype": dtype, "N": N, "d_ff": d_ff}, local, hp)
    return Localization(str(dtype).replace("torch.", ""), str(device), rows, first_path, local, missing, notes,
                        impl_outputs, oracle, swaps)
