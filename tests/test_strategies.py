"""The suite's own attention strategies draw examples that compare something.

An attention example whose every query row is fully masked checks nothing but finiteness: each comparison against
an oracle or torch passes vacuously. Here each attention strategy is drawn N times (derandomized, so the counts are
fixed) and fewer than 1% of its examples may leave no query row compared (and no (b, h) slice without one), while
with fully masked rows allowed they still occur in at least 10% of examples (as extra rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

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


def coverage(strategy: st.SearchStrategy, n: int = N) -> Coverage:
    """Draw ``n`` examples of ``strategy`` deterministically and count them. A row is compared when it has a visible
    key in every mask it passes through (both masks for decoder inputs)."""
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
