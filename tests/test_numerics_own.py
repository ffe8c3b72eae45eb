"""numerics.float32 and numerics.float64 on their own evidence: the implementation against its own formula.

The oracle tests judge numerics by the paper's float64 formula, so a wrong formula fails numerics.* as well. Here the
reference is **the implementation itself in float64**, on the same weights and inputs: a wrong formula computed
accurately passes, and only inaccurate arithmetic fails (a softmax without its max subtracted overflowing in float32,
a one-pass variance cancelling at an offset, a model that computes in float32 when built in float64, ...). Every
component is built through the contract helpers (``reference.kit.components.build``, ``build_model``) with random
parameters (``randomize_parameters_``), dropout 0, in eval mode; the paper's oracle is never called.

**The two modules.** ``m64`` is built in float64 by the implementation itself (``dtype=``, or the default dtype for
the blog's API; never a ``.double()``, which would hide a model that ignores the dtype it is asked for); its
parameters are rounded to float32 values, so that both modules hold the same numbers; ``m32`` is built in float32 and
given them by name. Buffers (the positional table) are each module's own, as the implementation builds them in that
dtype. Floating inputs are rounded to float32 once and fed to both (to ``m64`` as float64).

**float32: the bound is the implementation's own conditioning, measured on ``m64``.** A backward-stable algorithm
in a dtype of unit roundoff ``u`` returns the exact result of data perturbed by a few ``u``; at first order its error
is the result's response to such a perturbation. So ``m64`` is re-run ``TRIALS`` (8) times with every input,
parameter and buffer multiplied by ``1 + u32 * xi`` (``xi ~ U[-1, 1]``, ``u32 = 2^-24``: one float32 rounding of
the data), and the **spread** is the largest change of each result over its row (last axis) and the trials: the
Monte Carlo estimate of ``reference.judge.conditioning`` with one difference: no *operation* is rounded. That
module's spread rounds every operation of the paper's stable algorithm; rounding every operation of the
implementation under test would measure its own algorithm, and a one-pass variance would excuse itself. Then

    |m32(x) - m64(x)| <= max(OWN_COND_FACTOR * spread_row, FLOOR_UNITS * u32 * scale)      (every element)

``scale`` the largest |m64 result| of the tensor over the compared elements (the floor: a few roundings of the result
itself, for results the data do not move, e.g. a lookup). ``OWN_COND_FACTOR`` is ``conditioning.HEADROOM`` (2)
times the largest error / spread measured on correct algorithms, ``OWN_MEASURED_RATIO``: ``scratch_transformer``
and every positive control under the ``ci`` profile and the ``dev`` profile at five seeds (docs/tolerances.md, "Own
evidence"). An intermediate rounding of a backward-stable algorithm (a dot product's partial sums, ``exp``, the
mean of a two-pass norm) lands within a small multiple of the data's, however ill-conditioned the input; an unstable
one does not: a one-pass variance at a 1e4 offset errs O(1) against a spread of 1e-3, a softmax without its max is
NaN where ``m64`` is finite.

**float64 has no higher precision to compare with, so its evidence is resolution.** ``m64``'s response to a
``2^-40`` relative change of its data (``conditioning.PROBE_U``, the step that module probes float64 at) must be
``2^-16`` times its response to the same change at ``2^-24``: first-order propagation is linear. Both are central
differences (``(f(x + t xi) - f(x - t xi)) / 2``, exact to third order, one direction ``xi``), and may differ by what
float64 rounding adds, ``max(OWN_COND_FACTOR * (u64 / u32) * spread_row, FLOOR_UNITS * u64 * scale)``, the float32
rule at ``u64 = 2^-53``. A float64 computation resolves the ``2^-40`` step to ~``2^-13`` of itself; a model that
computes (or casts an intermediate) in float32 answers it with 0, a float64 cancellation (a one-pass variance at an
offset) with its rounding noise: both far outside. Two excuses, neither open to a float32 computation, which does not
move at all under a step below float32's half-ulp (``2^-25``): a ReLU whose input lies within the ``2^-24`` step of its
kink bends the step on one side only, so a row passes when the one-sided differences agree on either side; and a row
whose ``2^-24`` step is beyond the linear regime (its second-order term, predicted from a ``2^-28`` central step,
passes ``NONLINEAR`` of the first-order one: scores of 1e8 in a post-norm block at an offset, where a float32 rounding
flips the softmax) has no first-order response to compare. A float64 table computed to float32 accuracy
(``pe_float32_table``) is a constant, not arithmetic, and is not seen here (``pe.formula`` judges it).

**No float64 run, no verdict.** Rows where ``m64`` or a perturbed run is not finite (a formula's 0/0, a float64
overflow) are not compared. A draw on which the implementation raises in float64 is a float64 failure where the same
draw runs in float32 (the float64 case FAILs; the float32 case is "not reached because of numerics.float64"); where
it raises in both dtypes (a table that needs an even width, a cross-attention that cannot take the memory's mask) the
draw is rejected, and after ``MAX_UNRUNNABLE`` such draws with none judged the case is "not reached because of" the
component's formula clause: a formula that cannot run is that clause's verdict, not numerics'.

**Dtypes and clauses.** Each test is parametrised over ``dtype`` and names both clauses: the float32 case judges
float32 arithmetic (``numerics.float32``), the float64 case the resolution probe (``numerics.float64``);
``reference/spec/clauses.toml`` ``[dtypes]`` counts each case for its own dtype's clause only (``tests/plugin.py``),
so a float32 failure never reads as a float64 one, and ``--dtypes float32`` deselects the float64 cases. Both are
``own_evidence``: no other clause's oracle is involved.

**Inputs.** Every scale of ``SCALES`` for the position-wise components and encoder blocks and stacks; attention at
``tiny``, ``unit`` and ``hot``: inputs scaled so that the visible scores of the contract's formula (``w_q``, ``w_k``,
contiguous heads, read from ``m64``) reach ``HOT_SCORES``: past float32's ``exp`` range (88.7), within float64's
(709), so a softmax without its max subtracted overflows in float32 only. Decoder blocks and stacks take their memory
raw, so they stay at ``tiny``/``unit`` (at ``large`` their scores pass 709, where such a softmax is not finite in
float64 either and nothing would be compared). A LayerNormalization is never drawn over 2 features
(``NORM_EXCLUDED``). Query rows with no visible key are not compared (the contract asks only that they be finite).
One torch thread: at these sizes OpenMP's barriers cost more than the work (on a busy 2-core machine the model case
took 9.3 s with two threads, 0.6 s with one).

**Not compared: gradients.** A correct backward is not backward stable with respect to the data: at a LayerNorm over
2 features ``scratch_transformer``'s float32 d/dx erred 2,670 times the data spread (the backward's
``g - mean(g) - x_hat mean(g x_hat)`` cancels to ``u |g| / std`` while the result is eps-small), so an honest bound
must round the backward's own operations (``conditioning.MonteCarloMode``), which costs 8-25 ms a run at these sizes
(over the budget of 0.5 s a test) and would excuse an inaccurate backward anyway. float32 gradients stay judged
against torch's in ``tests/test_gradients.py``.
"""

from __future__ import annotations

import contextlib
import math
import os
import unittest
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from torch import nn

from reference.judge import conditioning
from reference.judge.compare import check_output, judge
from reference.kit import components, guard
from reference.kit.weights import MissingParameter
from reference.oracles import masks
from reference.spec import variants
from reference.spec.contract import ModelConfig, build_model, randomize_parameters_
from tests.strategies import (PE_LENGTHS, SCALES, dense_arrays, dense_attention_inputs, feed_forward_widths,
                              model_inputs, sequence_lengths, token_batches)
from tests.support import DTYPES, kept_weights, torch_threads

U32 = conditioning.unit_roundoff(torch.float32)  # 2^-24
U64 = conditioning.unit_roundoff(torch.float64)  # 2^-53
PROBE_U = conditioning.PROBE_U  # 2^-40
TRIALS = conditioning.TRIALS

#: Largest error / spread of a correct implementation (``scratch_transformer`` and every positive control, float32
#: cases; docs/tolerances.md "Own evidence"), rounded up.
OWN_MEASURED_RATIO: float = 20.0
OWN_COND_FACTOR: float = conditioning.HEADROOM * OWN_MEASURED_RATIO
#: The floor, in roundings of the result's scale (u32 for float32, u64 for the float64 probe).
FLOOR_UNITS: float = 8.0
#: Widths a LayerNormalization is never drawn at: over 2 features its output is +-alpha + bias whatever the data
#: (no perturbation of the data moves it), while a two-pass algorithm's centred values and variance err apart by
#: ``u |mean| / |x0 - x1|``: F.layer_norm, torch.var_mean and the textbook two-pass erred 6e4 times the spread there
#: (docs/tolerances.md "Own evidence"). Every wider row moves with its data.
NORM_EXCLUDED = frozenset({2})
#: The float64 probe's curvature step (below float32's half-ulp, 2^-25 relative: a float32 computation does not
#: move at all) and the share of the 2^-24 step's first-order response its second-order term may reach before a row
#: counts as beyond the linear regime at float32's resolution (the central difference then errs by ~NONLINEAR^2 of
#: the response, 50 times below the probe's allowance at OWN_COND_FACTOR = 40, 40 x 2^-13 = 5e-3).
CURVATURE_U = 2.0 ** -28
NONLINEAR = 0.01
#: A row whose best first-order comparison errs by more than this many spreads is checked for curvature.
CHECK_BEND = 4.0
#: The largest visible attention score of the ``hot`` scale: past float32's exp range, within float64's.
HOT_SCORES = (100.0, 600.0)

Tensors = dict[str, torch.Tensor]


@dataclass
class Case:
    """One drawn component: how to build it in a dtype, run it, on what, and where to compare."""

    component: str
    build: Callable[[torch.dtype], nn.Module]
    forward: Callable[[nn.Module, Tensors], Tensors]  # (module, floating inputs) -> named outputs
    inputs: dict[str, np.ndarray]  # floating inputs (rounded to float32 before use)
    config: dict
    where: dict[str, torch.Tensor] = field(default_factory=dict)  # per output: bool rows compared (absent: all)
    prepare: Callable[[nn.Module, Tensors], Tensors] | None = None  # rescale the inputs once m64 exists
    registry: str = ""  # the component's registry name (``reference.kit.components``)

    @property
    def clause(self) -> str:
        """The component's formula clause: where a draw that runs in neither dtype belongs."""
        if self.registry == "residual":
            return variants.residual_clause(variants.variant())
        return components.COMPONENTS[self.registry].clauses[0]


# --------------------------------------------------------------------------------------------------- modules
def _float64_module(case: Case, seed: int) -> nn.Module:
    """``m64``: built in float64, random parameters rounded to float32 values, eval mode."""
    m64 = randomize_parameters_(case.build(torch.float64), seed).eval()
    with torch.no_grad():
        for p in m64.parameters():
            if p.is_floating_point():
                p.copy_(p.float())  # the same numbers in both modules: float32 values
    return m64


def _float32_twin(case: Case, m64: nn.Module) -> nn.Module:
    """``m32``: built in float32, holding ``m64``'s parameters (by name), eval mode."""
    m32 = case.build(torch.float32).eval()
    p64, p32 = dict(m64.named_parameters()), dict(m32.named_parameters())
    assert p64.keys() == p32.keys() and all(p64[n].shape == p32[n].shape for n in p64), (
        f"{case.component}: the float32 and float64 builds hold different parameters: "
        f"{sorted(p64.keys() ^ p32.keys()) or [(n, tuple(p64[n].shape), tuple(p32[n].shape)) for n in p64]}")
    with torch.no_grad():
        for name, p in p32.items():
            p.copy_(p64[name])
    return m32


class _Float64RunRaised(Exception):
    """The implementation's own float64 run (the reference) raised."""


#: Per test case, how many draws had no float64 run (both dtypes raised) and how many were judged.
_UNRUNNABLE: dict[str, list[int]] = {}
#: Draws without a run (both dtypes raising) a test case rejects before it says "not reached", if none was judged.
MAX_UNRUNNABLE = 10


def _reference(case: Case, seed: int, inputs: Tensors) -> tuple[nn.Module, Tensors, Tensors]:
    """(m64, its float32-exact inputs, its results). An exception of the implementation is re-raised as
    ``_Float64RunRaised``; the kit's own verdicts (a hang, an impure call, weights not kept) and skips pass through."""
    try:
        m64 = _float64_module(case, seed)
        if case.prepare is not None:
            inputs = case.prepare(m64, inputs)
        inputs = {n: x.float().double() for n, x in inputs.items()}  # float32-exact, whatever prepare did
        return m64, inputs, _evaluate(case, m64, inputs)
    except (guard.KitClauseError, unittest.SkipTest):
        raise
    except Exception as exc:  # the implementation's own exception (WrongOutput included)
        raise _Float64RunRaised(f"{type(exc).__name__}: {exc}") from exc


def _without_reference(case: Case, *, dtype: torch.dtype, seed: int, inputs: Tensors, key: str,
                       error: _Float64RunRaised) -> None:
    """The float64 run raised: a float64 failure if the same draw runs in float32 (the float64 case FAILs, the
    float32 case is not reached because of numerics.float64); else no run exists in either dtype, a matter of the
    component's formula or structure: the draw is rejected (``MAX_UNRUNNABLE`` in a row with none judged: not
    reached because of the component's clause)."""
    __tracebackhide__ = True
    try:
        m32 = randomize_parameters_(case.build(torch.float32), seed).eval()
        _evaluate(case, m32, {n: x.float() for n, x in inputs.items()})
    except (guard.KitClauseError, unittest.SkipTest):
        raise
    except Exception as exc32:
        rejected, judged = _UNRUNNABLE.setdefault(key, [0, 0])
        _UNRUNNABLE[key][0] += 1
        if judged == 0 and rejected + 1 >= MAX_UNRUNNABLE:
            pytest.skip(f"not reached because of {case.clause}: {case.component} raised in float64 ({error}) and in "
                        f"float32 ({type(exc32).__name__}: {exc32}) on {rejected + 1} draws, none ran [{case.config}]")
        note(f"rejected: {case.component} raises in both dtypes ({error})")
        assume(False)
    if dtype == torch.float64:
        raise AssertionError(f"{case.component} {case.config}: the float64 run raised {error}, where the same "
                             f"draw runs in float32 (a float64 path that fails)") from error
    pytest.skip(f"not reached because of numerics.float64: {case.component}'s float64 run (the reference) raised "
                f"{error}, where the same draw runs in float32 [{case.config}]")


def _state(module: nn.Module) -> Tensors:
    """Every floating parameter and buffer: the data a perturbation rounds."""
    state = {f"param:{n}": p for n, p in module.named_parameters() if p.is_floating_point()}
    state.update({f"buffer:{n}": b for n, b in module.named_buffers() if b is not None and b.is_floating_point()})
    return state


@contextlib.contextmanager
def _perturbed(state: Tensors, saved: Tensors, xi: Tensors, t: float):
    """Every tensor of ``state`` (a module's parameters and buffers, ``saved`` their values) multiplied by
    ``1 + t * xi`` in place, restored after."""
    try:
        with torch.no_grad():
            for n, v in state.items():
                v.copy_(saved[n].double() * (1.0 + t * xi[n]))
        yield
    finally:
        with torch.no_grad():
            for n, v in state.items():
                v.copy_(saved[n])


def _directions(seed: int, tensors: Tensors) -> Tensors:
    """``xi ~ U[-1, 1]`` (float64) for each of ``tensors``, from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [t.numel() for t in tensors.values()]
    flat = torch.rand(sum(sizes), generator=gen, dtype=torch.float64) * 2 - 1
    return {n: part.view(t.shape).to(t.device) for (n, t), part in zip(tensors.items(), flat.split(sizes))}


# --------------------------------------------------------------------------------------------------- runs
def _evaluate(case: Case, module: nn.Module, inputs: Tensors) -> Tensors:
    """The outputs of ``case.forward``, each checked a Tensor, as float64 on the CPU."""
    with torch.no_grad():
        return {n: check_output(v, component=f"{case.component}.{n}", config=case.config).detach().to(
                    device="cpu", dtype=torch.float64) for n, v in case.forward(module, inputs).items()}


def _rowwise(spread: torch.Tensor) -> torch.Tensor:
    """The largest value over each row (last axis), for every element of the row (``conditioning``'s rule)."""
    if spread.dim() == 0 or spread.numel() == 0:
        return spread
    return spread.amax(dim=-1, keepdim=True).expand_as(spread)


def _scale(e: torch.Tensor, where: torch.Tensor | None) -> float:
    a = e.abs()
    if where is not None:
        a = torch.where(where.expand_as(a), a, torch.zeros_like(a))
    return float(a.max()) if a.numel() else 0.0


SPREAD_32 = (f"Spread: the largest change of the implementation's own float64 result over the row in {TRIALS} runs "
             f"with every input, parameter and buffer multiplied by 1 + u * xi, xi ~ U[-1, 1], u = 2^-24 (one "
             f"float32 rounding of the data; no operation rounded), tests/test_numerics_own.py")
SPREAD_64 = ("Spread: u64 / u32 x the row's change of the float64 result under a 2^-24 change of the data (what "
             "float64 rounding may add to the measured response), tests/test_numerics_own.py")


class _Lazy:
    """A value computed on first use (the probe's curvature runs: only where a row needs them)."""

    def __init__(self, make: Callable[[], object]) -> None:
        self._make, self._value, self._done = make, None, False

    def __call__(self):
        if not self._done:
            self._value, self._done = self._make(), True
        return self._value


def _probe_verdict(probe: dict[str, Tensors], curvature: _Lazy, base: Tensors, name: str, where: torch.Tensor, *,
                   scale: float, spread: torch.Tensor, what: str, config: dict):
    """The float64 probe of output ``name``: per row, the ``2^-40`` differences against ``2^-16`` times the ``2^-24``
    ones, central (exact to third order) or one-sided, up or down; a row passes when one of the three agrees within
    ``max(OWN_COND_FACTOR * (u64 / u32) * spread, FLOOR_UNITS * u64 * scale)``. One-sided: a ReLU whose input lies
    within the ``2^-24`` step of its kink bends the step on one side only (a float32 computation answers ``2^-40``
    with 0 on both sides, so it passes on none). A row whose best side errs by more than ``CHECK_BEND`` spreads is
    also checked for curvature (``curvature``: the ``2^-28`` central runs, which float32 cannot see): past
    ``NONLINEAR`` it is beyond the linear regime at float32's resolution (scores of 1e8: a softmax that flips under a
    2^-24 change), where no first-order comparison means anything. The verdict judges the central differences on
    the rows that pass in none of these ways."""
    ratio = PROBE_U / U32
    e = base[name]
    up_t, down_t, up_s, down_s = (probe[k][name] for k in ("up_t", "down_t", "up_s", "down_s"))
    sens = (U64 / U32) * spread
    floor = FLOOR_UNITS * U64 * scale
    allowed = torch.maximum(torch.full_like(e, floor), OWN_COND_FACTOR * sens)
    sides = (((up_s - down_s) / 2, (up_t - down_t) / 2 * ratio), (up_s - e, (up_t - e) * ratio),
             (e - down_s, (e - down_t) * ratio))
    keep = where.expand_as(e)
    rows = (lambda t: t.amax(dim=-1, keepdim=True)) if e.dim() else (lambda t: t)
    best = passing = None  # per row: the smallest over the sides of the largest (error - floor) / spread; any agrees
    for measured, predicted in sides:
        diff = (measured - predicted).abs()
        ok = rows(((diff > allowed) & keep).to(torch.int8)) == 0
        used = rows(torch.where(keep, (diff - floor).clamp_min(0) / sens.clamp_min(torch.finfo(torch.float64).tiny),
                                torch.zeros_like(diff)))
        passing = ok if passing is None else passing | ok
        best = used if best is None else torch.minimum(best, used)
    if bool((best > CHECK_BEND).any()):
        up_c, down_c = (runs[name] for runs in curvature())
        bend = ((up_c - 2 * e + down_c) * (U32 / CURVATURE_U) ** 2 / 2).abs()
        first = ((up_t - down_t) / 2).abs()
        nonlinear = rows(torch.where(keep, bend, torch.zeros_like(bend))) > NONLINEAR * rows(first)
        passing, best = passing | nonlinear, torch.where(nonlinear, torch.zeros_like(best), best)
    if bool((best > 0).any()):  # the bound, not the floor, decided some row: what OWN_COND_FACTOR must cover
        conditioning.log_ratio(f"{what} (float64 probe)", torch.float64, best, torch.ones_like(best),
                               bool(passing.all()))
    measured, predicted = sides[0]
    return judge(measured, predicted, dtype=torch.float64, rule="direct", rtol=0.0, atol=floor,
                 where=where & ~passing, sensitivity=lambda: sens, cond_factor=OWN_COND_FACTOR,
                 component=(f"{what}: float64 response to a 2^-40 change of the data (impl) vs 2^-16 x its response "
                            f"to a 2^-24 change (oracle), central differences (one-sided ones disagree too)"),
                 config=config, spread_note=SPREAD_64)


def check_own_numerics(case: Case, *, dtype: torch.dtype, device: str, seed: int, impl_name: str = "") -> None:
    """float32: ``m32``'s results within the own conditioning bound of ``m64``'s; float64: ``m64``'s response to a
    ``2^-40`` change of its data is ``2^-16`` times its response to a ``2^-24`` one (module docstring)."""
    __tracebackhide__ = True
    inputs = {n: torch.as_tensor(x, device=device).float().double() for n, x in case.inputs.items()}
    key = f"{impl_name}::{os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0]}"
    try:
        m64, inputs, base = _reference(case, seed, inputs)
    except _Float64RunRaised as error:
        _without_reference(case, dtype=dtype, seed=seed, inputs=inputs, key=key, error=error)
        return
    _UNRUNNABLE.setdefault(key, [0, 0])[1] += 1
    m32 = _float32_twin(case, m64) if dtype == torch.float32 else None
    state = _state(m64)
    saved = {n: v.detach().clone() for n, v in state.items()}
    worst = {n: torch.zeros_like(v) for n, v in base.items()}
    probe: dict[str, Tensors] = {}
    curvature = None
    for trial in range(TRIALS):
        xi = _directions(trial, {**state, **{f"in:{n}": x for n, x in inputs.items()}})

        def run(t: float) -> Tensors:
            with _perturbed(state, saved, xi, t):
                return _evaluate(case, m64, {n: x * (1.0 + t * xi[f"in:{n}"]) for n, x in inputs.items()})

        up = run(U32)
        for n, v in up.items():
            worst[n] = torch.maximum(worst[n], (v - base[n]).abs())
        if trial == 0 and dtype == torch.float64:
            probe = {"up_t": up, "down_t": run(-U32), "up_s": run(PROBE_U), "down_s": run(-PROBE_U)}
            curvature = _Lazy(lambda run=run: (run(CURVATURE_U), run(-CURVATURE_U)))
    spread = {n: _rowwise(w) for n, w in worst.items()}
    if dtype == torch.float32:
        assert m32 is not None
        actual = _evaluate(case, m32, {n: x.float() for n, x in inputs.items()})
    failures = []
    for name, e in base.items():
        where = case.where.get(name)
        # rows where m64 or its perturbed runs are not finite have no reference (a formula's 0/0, an overflow in
        # float64 too): not compared
        finite = (torch.isfinite(e) & torch.isfinite(spread[name])).all(dim=-1, keepdim=True) if e.dim() else \
            torch.isfinite(e) & torch.isfinite(spread[name])
        where = finite if where is None else where.cpu() & finite
        what = f"{case.component}.{name}"
        scale = _scale(e, where)
        if dtype == torch.float32:
            verdict = judge(actual[name], e, dtype=torch.float32, rule="direct", rtol=0.0,
                            atol=FLOOR_UNITS * U32 * scale, where=where, sensitivity=lambda: spread[name],
                            cond_factor=OWN_COND_FACTOR, component=f"{what}: float32 vs its own float64",
                            config=case.config, spread_note=SPREAD_32)
        else:
            verdict = _probe_verdict(probe, curvature, base, name, where, scale=scale, spread=spread[name],
                                     what=what, config=case.config)
        if not verdict.ok:
            failures.append(verdict.message())
    assert not failures, (f"{len(failures)} of {len(base)} results off the implementation's own float64 "
                          f"{'result' if dtype == torch.float32 else 'first-order response'}:\n\n"
                          + "\n\n".join(failures[:3]))


# --------------------------------------------------------------------------------------------------- cases
def _sizes(**kw) -> ModelConfig:
    return ModelConfig(**{"dropout": 0.0, **kw})


def _builder(impl, name: str, cfg: ModelConfig, device: str) -> Callable[[torch.dtype], nn.Module]:
    return lambda dtype: components.build(impl, name, cfg, device=device, dtype=dtype)


def _embedding(impl, draw, device: str) -> Case:
    d, vocab = draw(st.integers(1, 32)), draw(st.integers(1, 40))
    B, L = draw(st.integers(1, 3)), draw(sequence_lengths(16))
    tokens = torch.as_tensor(draw(token_batches(B, L, vocab)), device=device)
    return Case("InputEmbeddings", _builder(impl, "embedding", _sizes(d_model=d, src_vocab_size=vocab), device),
                lambda m, x: {"out": m(tokens)}, {}, {"d_model": d, "vocab": vocab, "B": B, "L": L},
                registry="embedding")


def _positional_encoding(impl, draw, device: str) -> Case:
    d, seq_len = draw(st.integers(1, 32)), draw(PE_LENGTHS)
    B, L, scale = draw(st.integers(1, 2)), draw(sequence_lengths(seq_len)), draw(st.sampled_from(SCALES))
    x = draw(dense_arrays((B, L, d), scale=scale))
    return Case("PositionalEncoding", _builder(impl, "positional_encoding", _sizes(d_model=d, src_seq_len=seq_len),
                                               device),
                lambda m, x: {"out": m(x["x"])}, {"x": x},
                {"d_model": d, "seq_len": seq_len, "B": B, "L": L, "scale": scale}, registry="positional_encoding")


def _widths(*, norm: bool) -> st.SearchStrategy[int]:
    """d_model in 1..48; never one of ``NORM_EXCLUDED`` where a LayerNormalization normalises it."""
    return st.integers(1, 48).filter(lambda d: d not in NORM_EXCLUDED) if norm else st.integers(1, 48)


def _position_wise(name: str, contract: str, *, vocab: bool = False, d_ff: bool = False, norm: bool = False):
    """LayerNormalization, FeedForwardBlock, ProjectionLayer: x [B, L, d] at every scale."""
    def make(impl, draw, device: str) -> Case:
        d, scale = draw(_widths(norm=norm)), draw(st.sampled_from(SCALES))
        B, L = draw(st.integers(1, 3)), draw(sequence_lengths(16))
        sizes = {"d_model": d}
        if d_ff:
            sizes["d_ff"] = draw(feed_forward_widths(64))
        if vocab:
            sizes["tgt_vocab_size"] = draw(st.integers(1, 40))
        x = draw(dense_arrays((B, L, d), scale=scale))
        return Case(contract, _builder(impl, name, _sizes(**sizes), device), lambda m, x: {"out": m(x["x"])},
                    {"x": x}, {**sizes, "B": B, "L": L, "scale": scale}, registry=name)
    return make


class _ResidualWithFeedForward(nn.Module):
    """A ResidualConnection and the FeedForwardBlock it wraps, as one module (one set of parameters)."""

    def __init__(self, residual: nn.Module, sublayer: nn.Module) -> None:
        super().__init__()
        self.residual, self.sublayer = residual, sublayer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x, self.sublayer)


def _residual(impl, draw, device: str) -> Case:
    d, d_ff, scale = draw(_widths(norm=True)), draw(feed_forward_widths(32)), draw(st.sampled_from(SCALES))
    B, L = draw(st.integers(1, 3)), draw(sequence_lengths(16))
    cfg = _sizes(d_model=d, d_ff=d_ff)

    def build(dtype: torch.dtype) -> nn.Module:
        return _ResidualWithFeedForward(components.build(impl, "residual", cfg, device=device, dtype=dtype),
                                        components.build(impl, "feed_forward", cfg, device=device, dtype=dtype))

    return Case("ResidualConnection", build, lambda m, x: {"out": m(x["x"])},
                {"x": draw(dense_arrays((B, L, d), scale=scale))},
                {"d_model": d, "d_ff": d_ff, "B": B, "L": L, "scale": scale}, registry="residual")


def _visible(mask: np.ndarray | None, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Bool [B, h, Lq, Lk]: the keys each query may attend to."""
    m = masks.contract_mask_4d(mask, batch=shape[0], heads=shape[1], len_q=shape[2], len_k=shape[3])
    return torch.ones(shape, dtype=torch.bool) if m is None else m.expand(shape)


def _heat(module: nn.Module, inputs: Tensors, *, h: int, mask: np.ndarray | None, target: float) -> Tensors:
    """``inputs`` scaled (by ``c``; scores scale by ``c^2``) so that the visible scores of the contract's formula
    reach ``target`` in magnitude, stay within ``HOT_SCORES[1]`` and, where the signs allow it, the largest positive
    one passes ``HOT_SCORES[0]`` (two passes: a projection bias does not scale with the inputs)."""
    low, high = HOT_SCORES
    w_q, w_k = getattr(module, "w_q", None), getattr(module, "w_k", None)
    if not (callable(w_q) and callable(w_k)):
        raise MissingParameter("not reached because of api.attributes: the block holds no callable w_q/w_k, which "
                               "the 'hot' scale reads to place the scores")
    for _ in range(2):
        with torch.no_grad():
            q = w_q(inputs["x"])
            k = w_k(inputs.get("memory", inputs["x"]))
            B, Lq, d = q.shape
            d_k = d // h
            s = torch.einsum("bqhc,bkhc->bhqk", q.reshape(B, Lq, h, d_k), k.reshape(B, k.shape[1], h, d_k))
            s = (s / math.sqrt(d_k)).cpu()
        visible = _visible(mask, tuple(s.shape))
        largest = float(s.abs()[visible].max()) if bool(visible.any()) else 0.0
        positive = float(s[visible].max()) if bool(visible.any()) else 0.0
        if not largest > 0:
            return inputs
        c2 = target / largest
        if positive > 0 and low / positive <= high / largest:
            c2 = min(max(c2, low / positive), high / largest)
        inputs = {n: x * math.sqrt(c2) for n, x in inputs.items()}
    return inputs


def _attention(masked: bool):
    def make(impl, draw, device: str) -> Case:
        scale = draw(st.sampled_from(("tiny", "unit", "hot")))
        kinds = ("causal", "key_padding", "random", "blog_key", "blog_full", "blog_shared") if masked else ("none",)
        case = draw(dense_attention_inputs(scales=("unit",) if scale == "hot" else (scale,), max_d_model=32,
                                           max_len=8, mask_kinds=kinds, require_masked_key=masked))
        cfg = case.cfg
        mask = None if case.mask is None else torch.as_tensor(case.mask, device=device)
        inputs = {"x": case.x} if case.memory is None else {"x": case.x, "memory": case.memory}
        target = draw(st.floats(*HOT_SCORES)) if scale == "hot" else None

        def forward(m: nn.Module, x: Tensors) -> Tensors:
            q = x["x"]
            kv = x.get("memory", q)
            out = m(q, kv, kv, mask)
            return {"out": out, "attention_scores": kept_weights(m, (cfg.B, cfg.h, cfg.Lq, cfg.Lk))}

        rows = masks.attended_rows(case.mask, batch=cfg.B, heads=cfg.h, len_q=cfg.Lq, len_k=cfg.Lk).to(device)
        head_rows = _visible(case.mask, (cfg.B, cfg.h, cfg.Lq, cfg.Lk)).any(dim=-1, keepdim=True).to(device)
        prepare = None if target is None else (
            lambda m, x: _heat(m, x, h=cfg.h, mask=case.mask, target=target))
        return Case("MultiHeadAttentionBlock", _builder(impl, "multi_head_attention",
                                                        _sizes(d_model=cfg.d_model, h=cfg.h), device),
                    forward, inputs, {**case.describe(), "scale": scale, "hot_score": target},
                    where={"out": rows, "attention_scores": head_rows}, prepare=prepare,
                    registry="multi_head_attention")
    return make


def _encoder_like(name: str, contract: str, *, stack: bool):
    def make(impl, draw, device: str) -> Case:
        case = draw(dense_attention_inputs(cross=False, scales=SCALES, max_d_model=32, max_len=8,
                                           allow_fully_masked=not stack))
        assume(case.cfg.d_model not in NORM_EXCLUDED)
        cfg, d_ff = case.cfg, draw(feed_forward_widths(32))
        N = draw(st.integers(1, 2)) if stack else 1
        mask = None if case.mask is None else torch.as_tensor(case.mask, device=device)
        rows = masks.attended_rows(case.mask, batch=cfg.B, heads=cfg.h, len_q=cfg.Lq, len_k=cfg.Lk).to(device)
        return Case(contract, _builder(impl, name, _sizes(d_model=cfg.d_model, h=cfg.h, d_ff=d_ff, N=N), device),
                    lambda m, x: {"out": m(x["x"], mask)}, {"x": case.x},
                    {**case.describe(), "d_ff": d_ff, "N": N}, where={"out": rows}, registry=name)
    return make


def _decoder_like(name: str, contract: str, *, stack: bool):
    def make(impl, draw, device: str) -> Case:
        case = draw(dense_attention_inputs(decoder=True, scales=("tiny", "unit"), max_d_model=32, max_len=8,
                                           allow_fully_masked=not stack))
        assume(case.cfg.d_model not in NORM_EXCLUDED)
        cfg, d_ff = case.cfg, draw(feed_forward_widths(32))
        N = draw(st.integers(1, 2)) if stack else 1
        src = None if case.mask is None else torch.as_tensor(case.mask, device=device)
        tgt = None if case.self_mask is None else torch.as_tensor(case.self_mask, device=device)
        rows = (masks.attended_rows(case.mask, batch=cfg.B, heads=cfg.h, len_q=cfg.Lq, len_k=cfg.Lk)
                & masks.attended_rows(case.self_mask, batch=cfg.B, heads=cfg.h, len_q=cfg.Lq, len_k=cfg.Lq))
        return Case(contract, _builder(impl, name, _sizes(d_model=cfg.d_model, h=cfg.h, d_ff=d_ff, N=N), device),
                    lambda m, x: {"out": m(x["x"], x["memory"], src, tgt)}, {"x": case.x, "memory": case.memory},
                    {**case.describe(), "d_ff": d_ff, "N": N}, where={"out": rows.to(device)}, registry=name)
    return make


def _transformer(impl, draw, device: str) -> Case:
    case = draw(model_inputs(max_d_model=16, max_N=1, max_len=5, max_batch=2))
    assume(case.cfg.d_model not in NORM_EXCLUDED)
    src, tgt = (torch.as_tensor(a, device=device) for a in (case.src, case.tgt))
    src_mask, tgt_mask = (None if a is None else torch.as_tensor(a, device=device)
                          for a in (case.src_mask, case.tgt_mask))

    def forward(m: nn.Module, x: Tensors) -> Tensors:
        memory = m.encode(src, src_mask)
        decoded = m.decode(memory, src_mask, tgt, tgt_mask)
        return {"memory": memory, "decoded": decoded, "logits": m.project(decoded)}

    return Case("Transformer", lambda dtype: build_model(impl, case.cfg, device=device, dtype=dtype), forward, {},
                case.describe(), registry="transformer")


#: Every component, by the registry's name (``pytest -k layer_norm``), and how to draw one.
CASES: dict[str, Callable[..., Case]] = {
    "embedding": _embedding,
    "positional_encoding": _positional_encoding,
    "layer_norm": _position_wise("layer_norm", "LayerNormalization", norm=True),
    "feed_forward": _position_wise("feed_forward", "FeedForwardBlock", d_ff=True),
    "multi_head_attention": _attention(masked=False),
    "multi_head_attention-masked": _attention(masked=True),
    "residual": _residual,
    "encoder_block": _encoder_like("encoder_block", "EncoderBlock", stack=False),
    "decoder_block": _decoder_like("decoder_block", "DecoderBlock", stack=False),
    "encoder": _encoder_like("encoder", "Encoder", stack=True),
    "decoder": _decoder_like("decoder", "Decoder", stack=True),
    "projection": _position_wise("projection", "ProjectionLayer", vocab=True),
}


#: What a case's comparison relies on besides the implementation's own float64 run: the attention cases compare the
#: weights ``attention_scores`` keeps, the softmax probabilities of the static-attention clause (weights that are
#: the raw scores hold a dtype's own fill at masked keys, a different number in each dtype).
CASE_GIVEN: dict[str, tuple[str, ...]] = {"multi_head_attention": ("mha.static-attention",),
                                          "multi_head_attention-masked": ("mha.static-attention",)}
#: Draws the implementation cannot run in either dtype are rejected (``_without_reference``): its component's
#: clause judges that, numerics are judged on the draws that run (``MAX_UNRUNNABLE``: none ran, "not reached"). A
#: component that raises on many draws (one that needs Ls == Lt) must not turn into Hypothesis' filter health check.
REJECTING = settings(suppress_health_check=[*settings().suppress_health_check, HealthCheck.filter_too_much])


@pytest.mark.clause("numerics.float32", "numerics.float64")
@pytest.mark.own_evidence
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("component", [pytest.param(c, marks=pytest.mark.own_evidence(given=CASE_GIVEN.get(c, ())))
                                       for c in CASES])
@REJECTING
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_component_within_its_own_float64_conditioning(impl, device, dtype, component, data, seed) -> None:
    """float32: every output of each component against its own float64 run, within its own conditioning bound;
    float64: its first-order response resolved at 2^-40 (module docstring)."""
    case = CASES[component](impl, data.draw, device)
    note(case.config)
    with torch_threads(1):
        check_own_numerics(case, dtype=dtype, device=device, seed=seed, impl_name=impl.__name__)


@pytest.mark.clause("numerics.float32", "numerics.float64")
@pytest.mark.own_evidence
@pytest.mark.parametrize("dtype", DTYPES)
@REJECTING
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_transformer_within_its_own_float64_conditioning(impl, device, dtype, data, seed) -> None:
    """``encode``, ``decode`` (on its own ``encode``'s memory) and ``project`` of a built model (N = 1: the stacks of
    two layers are the ``encoder``/``decoder`` cases), by the same rule."""
    case = _transformer(impl, data.draw, device)
    note(case.config)
    with torch_threads(1):
        check_own_numerics(case, dtype=dtype, device=device, seed=seed, impl_name=impl.__name__)
