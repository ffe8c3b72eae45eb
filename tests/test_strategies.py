"""The suite's own attention strategies draw examples that compare something.

An attention example whose every query row is fully masked checks nothing but finiteness: each comparison against
an oracle or torch passes vacuously. Here each attention strategy is drawn N times (derandomized, so the counts are
fixed) and fewer than 1% of its examples may leave no query row compared (and no (b, h) slice without one), while
with fully masked rows allowed they still occur in at least 10% of examples (as extra rows).

Likewise an invariance example that leaves unchanged what must not matter (no token after the cut or at a padded
position changed, the identity permutation, a zero shift) compares a computation with itself and passes whatever
the model: fewer than 1% of each invariance strategy's examples may, and the masking perturbations change only
positions that must not matter.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import ModuleType
from typing import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests import strategies as S

#: Examples drawn per strategy.
N = 300
#: Largest fraction of examples that may compare nothing (no query row with a visible key).
MAX_NOTHING = 0.01
#: Smallest fraction of examples that must hold a fully masked row where fully masked rows are allowed.
MIN_FULLY_MASKED = 0.10


def compared_rows(mask: np.ndarray | None, B: int, h: int, Lq: int, Lk: int) -> np.ndarray:
    """Bool[B, h, Lq]: the query rows with at least one visible key under ``mask`` (None: every key visible)."""
    if mask is None:
        return np.ones((B, h, Lq), dtype=bool)
    return np.broadcast_to(np.asarray(mask, dtype=bool), (B, h, Lq, Lk)).any(axis=-1)


def rows_of(example) -> list[np.ndarray]:
    """Each mask's compared rows, Bool[B, h, Lq], of an ``AttentionInputs`` (a decoder's self mask too) or of an
    ``attention_masks`` triple (cfg, kind, mask)."""
    if isinstance(example, tuple):
        cfg, _, mask = example
        return [compared_rows(mask, cfg.B, cfg.h, cfg.Lq, cfg.Lk)]
    cfg = example.cfg
    rows = [compared_rows(example.mask, cfg.B, cfg.h, cfg.Lq, cfg.Lk)]
    if example.self_mask_kind is not None:  # decoder inputs: x attends over itself, then over memory
        rows.append(compared_rows(example.self_mask, cfg.B, cfg.h, cfg.Lq, cfg.Lq))
    return rows


@dataclass(frozen=True)
class Coverage:
    """Fractions of N examples: comparing nothing; with a (b, h) slice comparing nothing; with a fully masked row."""

    nothing: float
    empty_slice: float
    fully_masked: float


@contextlib.contextmanager
def _own_distribution() -> Iterator[None]:
    """Hypothesis (6.131 on) biases its draws toward constants it mines from every local module imported so far
    (``providers._get_local_constants``), so a share measured over ``n`` draws would depend on which tests ran
    before in the same process (the kill matrix's one-process baseline measured 9.7% where a fresh process measures
    18%). Measure the strategy's own distribution: no mined constants while it draws."""
    try:
        from hypothesis.internal.conjecture import providers
        mined, cache = providers._get_local_constants, providers.CONSTANTS_CACHE
    except (ImportError, AttributeError):  # a Hypothesis without the constant pool: nothing to pin
        yield
        return
    empty = type(mined())()
    providers._get_local_constants = lambda: empty
    cache.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = mined
        cache.cache.clear()


def coverage(strategy: st.SearchStrategy, n: int = N) -> Coverage:
    """Draw ``n`` examples of ``strategy`` deterministically (``_own_distribution``) and count them. A row is
    compared when it has a visible key in every mask it passes through (both masks for decoder inputs)."""
    nothing = empty_slice = fully_masked = drawn = 0

    @settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(example=strategy)
    def record(example) -> None:
        nonlocal nothing, empty_slice, fully_masked, drawn
        rows = rows_of(example)
        both = np.logical_and.reduce(rows)  # (B, h, Lq)
        drawn += 1
        nothing += not both.any()
        empty_slice += not both.any(axis=-1).all()
        fully_masked += any(not r.all() for r in rows)

    with _own_distribution():
        record()
    assert drawn >= n // 2, f"only {drawn} examples drawn"
    return Coverage(nothing / drawn, empty_slice / drawn, fully_masked / drawn)


def attention_strategies(module: ModuleType = S) -> dict[str, tuple[st.SearchStrategy, bool]]:
    """name -> (strategy, whether fully masked rows are allowed) for every attention strategy of ``module``."""
    return {
        "dense_attention_inputs()": (module.dense_attention_inputs(), True),
        "dense_attention_inputs(decoder=True)": (module.dense_attention_inputs(decoder=True), True),
        "dense_attention_inputs(allow_fully_masked=False)": (module.dense_attention_inputs(allow_fully_masked=False),
                                                             False),
        "dense_attention_inputs(require_masked_key=True)": (module.dense_attention_inputs(require_masked_key=True),
                                                            True),
        "dense_attention_inputs(decoder=True, allow_fully_masked=False)": (
            module.dense_attention_inputs(decoder=True, allow_fully_masked=False), False),
        "attention_masks()": (module.attention_masks(), True),
        "fixed_shape_decoder_inputs": (module.attention_configs().flatmap(module.fixed_shape_decoder_inputs), True),
    }


STRATEGIES = attention_strategies()


@pytest.mark.clause("kit")
@pytest.mark.parametrize("name", tuple(STRATEGIES))
def test_attention_strategy_compares_something(name: str) -> None:
    """Fewer than 1% of the examples leave no query row (nor some (b, h) slice without a row) with a visible key;
    with fully masked rows allowed, at least 10% still hold one; without, none does."""
    strategy, allow_fully_masked = STRATEGIES[name]
    cov = coverage(strategy)
    assert cov.nothing < MAX_NOTHING, f"{name}: {cov.nothing:.1%} of {N} examples compare no query row"
    assert cov.empty_slice < MAX_NOTHING, f"{name}: {cov.empty_slice:.1%} of {N} examples have a (b, h) slice " \
                                          "without a compared row"
    if allow_fully_masked:
        assert cov.fully_masked >= MIN_FULLY_MASKED, (
            f"{name}: only {cov.fully_masked:.1%} of {N} examples hold a fully masked row")
    else:
        assert cov.fully_masked == 0, f"{name}: {cov.fully_masked:.1%} of {N} examples hold a fully masked row"


@pytest.mark.clause("kit")
@given(case=S.int_mask_twins())
def test_int_mask_twins_keep_a_visible_key(case) -> None:
    """The integer twin is nonzero exactly where the bool mask is True, and the mask has a True entry."""
    _, _, mask, twin = case
    assert mask.any()
    np.testing.assert_array_equal(twin != 0, mask)


# ------------------------------------------------------------------------------- invariances that change something
def share(strategy: st.SearchStrategy, predicate, n: int = N) -> float:
    """The fraction of ``n`` examples of ``strategy`` (drawn deterministically) for which ``predicate`` holds."""
    hits = drawn = 0

    @settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(example=strategy)
    def record(example) -> None:
        nonlocal hits, drawn
        drawn += 1
        hits += bool(predicate(example))

    record()
    assert drawn >= n // 2, f"only {drawn} examples drawn"
    return hits / drawn


def _must_not_matter(name: str, case: S.PerturbedBatch) -> tuple[np.ndarray, np.ndarray]:
    """(original tokens, Bool[B, L] positions whose change must not matter) of a perturbation."""
    batch = case.batch
    if name.startswith("causal"):
        return batch.tgt, np.broadcast_to(np.arange(batch.tgt.shape[1]) > batch.cut, batch.tgt.shape)
    lengths = np.asarray(batch.src_lengths)
    return batch.src, np.arange(batch.src.shape[1])[None, :] >= lengths[:, None]


#: The perturbations the masking properties apply: what they change must not matter to what they compare.
PERTURBATIONS = {"causal_perturbations()": S.causal_perturbations(),
                 "padding_perturbations()": S.padding_perturbations()}


def _changes_nothing(name: str):
    def predicate(case: S.PerturbedBatch) -> bool:
        original, _ = _must_not_matter(name, case)
        return np.array_equal(case.changed, original)
    return predicate


#: Strategies of the invariance properties, and when an example compares a computation with itself (the change
#: that must not matter is none): the identity permutation, a shift too small to change x (|c| < 1e-3 is far above
#: that; it is the bound the strategy promises), a scaling s = 1 (|log s| < log 1.1), every mask form full-shaped.
INVARIANCES = {
    **{name: (strategy, _changes_nothing(name)) for name, strategy in PERTURBATIONS.items()},
    "permuted_attentions(self_attention=True)": (S.permuted_attentions(self_attention=True),
                                                 lambda c: list(c.perm) == sorted(c.perm)),
    "permuted_attentions(self_attention=False)": (S.permuted_attentions(self_attention=False),
                                                  lambda c: list(c.perm) == sorted(c.perm)),
    "nonzero_shifts()": (S.nonzero_shifts(), lambda c: abs(c) < 1e-3),
    "log_scalings()": (S.log_scalings(), lambda log_s: abs(log_s) < np.log(1.1) - 1e-12),
    "mask_forms()": (S.mask_forms(), lambda case: all(f.shape == case[2][-1].shape for f in case[2][:-1])),
    "permuted_attentions(): key_lengths": (S.permuted_attentions(),
                                          lambda c: all(n == c.cfg.Lk for n in c.key_lengths)),
    "dense_attention_inputs(require_masked_key=True)": (
        S.dense_attention_inputs(max_len=10, max_d_model=32, require_masked_key=True),
        lambda inp: not S.masks_a_visible_row_key(inp.mask)),
}


@pytest.mark.clause("kit")
@pytest.mark.parametrize("name", tuple(INVARIANCES))
def test_invariance_strategy_changes_something(name: str) -> None:
    """Fewer than 1% of the examples of an invariance property's strategy leave unchanged what must not matter,
    so compare equal computations. Measured the same way before issue 24 (300 derandomized draws of the
    strategies then used): the causal and padding draws changed no token in 62% / 64%, 26% / 28% of the
    permutations were the identity, 15% of the key lengths masked nothing, 17% of the mask forms were all
    full-shaped, 52% of the zero-weight draws masked no key of a row with a visible one, and 29% / 31% of the
    shifts / scalings were within 1e-3 of none (0.7% exactly none); now 0% each."""
    strategy, compares_itself = INVARIANCES[name]
    nothing = share(strategy, compares_itself)
    assert nothing < MAX_NOTHING, f"{name}: {nothing:.1%} of {N} examples change nothing that must not matter"


@pytest.mark.clause("kit")
@pytest.mark.parametrize("name", tuple(PERTURBATIONS))
def test_masking_perturbation_changes_only_what_must_not_matter(name: str) -> None:
    """Every token a perturbation changes is at a position that must not matter (after the cut; padding), every
    token at ``where`` changed to another id in the vocabulary: a change elsewhere would be a false alarm."""
    def wrong(case: S.PerturbedBatch) -> bool:
        original, allowed = _must_not_matter(name, case)
        vocab = case.batch.cfg.tgt_vocab_size if name.startswith("causal") else case.batch.cfg.src_vocab_size
        return not (np.array_equal(case.where, case.changed != original) and not (case.where & ~allowed).any()
                    and case.where.any() and ((case.changed >= 0) & (case.changed < vocab)).all())

    assert share(PERTURBATIONS[name], wrong) == 0, f"{name}: a draw changes a token that matters"
