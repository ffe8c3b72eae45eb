"""The Monte Carlo model of ``reference.judge.conditioning``: what it rounds, and how often (issue 24).

Each value is rounded once where it is made (an input by ``to_numpy``, a result by its operation), never again where
it is used; a sum rounds each of its additions, a dot product each product and partial sum. These are tests of the
kit, not of an implementation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference.judge import conditioning
from reference.oracles import numpy_ref
from reference.spec.contract import ModelConfig, build_model, randomize_parameters_
from reference.oracles.masks import random_case
from reference.kit.weights import CONTRACT_EPS, extract_weights, to_numpy

pytestmark = pytest.mark.clause("kit")

U = 2.0 ** -24


def _spread(oracle, trials: int = 64) -> float:
    return float(conditioning.sensitivity(oracle, U, trials=trials).max())


def test_an_operand_is_not_rounded_again_where_it_is_used() -> None:
    """``x * 1`` rounds x once (input) and the product once: the spread is <= 2u |x|, used once or many times."""
    x = np.full((1, 4), 3.0)
    once = _spread(lambda: conditioning.perturb(x) * 1.0)
    many = _spread(lambda: (lambda y: ((y * 1.0) + (y * 1.0)) / 2.0 + 0.0 * y)(conditioning.perturb(x)))
    assert once <= 2 * U * 3.0 * (1 + 1e-9)
    assert many <= 4 * U * 3.0 * (1 + 1e-9), "an operand was perturbed again at a use"


def test_a_sum_rounds_each_addition() -> None:
    """The sum of n ones: one rounding of the result moves it by at most u * n; a pairwise tree rounds every level
    (std ``u n sqrt(2 / 3)``, so the largest of 64 trials is ~2 u n; measured 1.9, the trials' seeds are fixed)."""
    n = 1024
    ones = np.ones((1, n))
    moved = _spread(lambda: np.sum(conditioning.perturb(ones) * 0.0 + 1.0, axis=-1, keepdims=True))
    assert moved > 1.3 * U * n, f"the sum's additions were not rounded: spread {moved:.3e}"


def test_a_dot_product_rounds_each_partial_sum() -> None:
    """``ones(1, k) @ ones(k, 1)``: k - 1 sequential roundings of partial sums up to k, far more than one of k."""
    k = 256
    a, b = np.ones((1, k)), np.ones((k, 1))
    moved = _spread(lambda: conditioning.perturb(a) @ conditioning.perturb(b))
    assert moved > 4 * U * k, f"matmul's inner sums were not rounded: spread {moved:.3e}"


def test_an_oracle_reading_its_weights_inside_the_perturbation_has_a_spread(impl) -> None:
    """The whole-model oracle pattern of ``test_transformer_matches_torch_transformer``: weights read once outside and
    a cached trace have spread 0.0 (a dead fallback); read inside, recomputed when ``perturbing()``, they do not."""
    cfg = ModelConfig(src_vocab_size=11, tgt_vocab_size=13, src_seq_len=7, tgt_seq_len=6, d_model=16, N=2, h=4,
                      dropout=0.0, d_ff=24)
    model = randomize_parameters_(build_model(impl, cfg, dtype=torch.float32), 3)
    case = random_case(cfg, batch=2, seed=3)
    src, tgt, sm, tm = (to_numpy(t) for t in (case.src, case.tgt, case.src_mask, case.tgt_mask))
    weights, cached = extract_weights(model), {}

    def stale() -> np.ndarray:
        if not cached:
            numpy_ref.transformer(src, tgt, sm, tm, weights, 4, CONTRACT_EPS, trace=cached)
        return cached["projection_layer"]

    def fresh() -> np.ndarray:
        if conditioning.perturbing() or not cached:
            trace: dict = {}
            numpy_ref.transformer(src, tgt, sm, tm, extract_weights(model), 4, CONTRACT_EPS, trace=trace)
            return trace["projection_layer"]
        return cached["projection_layer"]

    u = conditioning.unit_roundoff(torch.float32)
    assert float(conditioning.sensitivity(stale, u).max()) == 0.0
    assert float(conditioning.sensitivity(fresh, u).max()) > 1e-8
