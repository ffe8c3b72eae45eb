"""Attention judged on its own evidence (issue 31, "one bug, one root"): properties that hold whatever else is wrong,
so a FAIL here is a root of its clause, never a consequence of another (``@pytest.mark.own_evidence``;
``reference.kit.verdict``).

* ``mha.formula``: the block's output (eval mode, no mask) against the float64 oracle: no mask, no dropout and no
  ``attention_scores`` are involved, so a masking or weight-keeping bug cannot fail it.
* ``mha.static-attention``: ``attention(q, k, v, None, None)`` returns ``(out, weights)`` whose weights are
  distributions over the keys that ``out`` averages the values with (``out == weights @ v``), and the block keeps
  such a distribution in ``attention_scores``. True of any softmax over the keys, scaled or not, however the heads
  are split: only a wrong softmax axis, raw scores kept, or an output that is not the weighted average fails it.
* ``mask.zero-weight``: masking keys equals removing them: ``attention(q, k, v, key_mask)`` equals
  ``attention(q, k[visible], v[visible], None)``. True of every formula whose weights are a softmax over the keys
  (any scale); a mask applied after the softmax, an inverted mask, or a softmax over the queries fails it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.judge.compare import assert_close, check_output
from reference.judge.mistakes import naming
from reference.kit.weights import extract_weights, to_numpy
from reference.oracles import mistakes as M
from reference.oracles import numpy_ref as R
from reference.spec.contract import construct, randomize_parameters_
from tests.strategies import AttentionInputs, dense_arrays, dense_attention_inputs, heads_and_width
from tests.support import DTYPES, kept_weights, noted
from tests.test_equivalence_oracle import _check  # one comparison rule for every oracle test

F64 = torch.float64
seeds = st.integers(0, 2**16)


@pytest.mark.clause("mha.formula", "numerics.float64", "numerics.float32")
@pytest.mark.own_evidence("mha.formula")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(scales=("tiny", "unit"), mask_kinds=("none",)), seed=seeds)
def test_multi_head_attention_output_matches_oracle_without_a_mask(impl, device, dtype, case: AttentionInputs,
                                                                   seed: int) -> None:
    """Self- and cross-attention, eval mode, ``mask=None``, values distinct from the keys: the output alone against
    ``R.multi_head_attention`` (tolerance: the dtype's table widened to the conditioning bound, as every oracle
    comparison)."""
    config = noted(case, mode="eval")
    cfg = case.cfg
    mha = construct(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, 0.1, device=device, dtype=dtype)
    randomize_parameters_(mha, seed)
    mha.eval()
    q = torch.as_tensor(case.x, device=device).to(dtype)
    kv = q if case.memory is None else torch.as_tensor(case.memory, device=device).to(dtype)
    # values of their own (the key rows reversed): a block that projects the values from the keys is seen
    v = kv.flip(1) if kv.shape[1] > 1 else -kv
    with torch.no_grad():
        out = mha(q, kv, v, None)
    out = out[0] if isinstance(out, tuple) else out
    _check(out, lambda: R.multi_head_attention(to_numpy(q), to_numpy(kv), to_numpy(v), None, extract_weights(mha),
                                               cfg.h)[0],
           component="MultiHeadAttentionBlock (no mask)", config=config, dtype=dtype,
           mistakes={name: (lambda f=f: f(to_numpy(q), to_numpy(kv), to_numpy(v), None, extract_weights(mha), cfg.h)[0])
                     for name, f in M.MULTI_HEAD.items()})


@st.composite
def per_head_inputs(draw, max_len: int = 8) -> dict:
    """q [B, h, Lq, d_k], k and v [B, h, Lk, d_k] (dense, unit scale), float64."""
    h, d_k = draw(heads_and_width(max_d_model=32))
    B = draw(st.integers(1, 2))
    Lq, Lk = draw(st.integers(1, max_len)), draw(st.integers(2, max_len))
    q, k, v = (draw(dense_arrays((B, h, L, d_k), scale="unit")) for L in (Lq, Lk, Lk))
    return {"B": B, "h": h, "d_k": d_k, "Lq": Lq, "Lk": Lk, "q": q, "k": k, "v": v}


def _merged(a: np.ndarray) -> np.ndarray:
    """[B, h, L, d_k] -> [B, L, h * d_k]: drawn per-head values reused as a block's input."""
    B, h, L, d_k = a.shape
    return np.ascontiguousarray(a.transpose(0, 2, 1, 3).reshape(B, L, h * d_k))


def _static(impl, q, k, v, mask):
    return impl.MultiHeadAttentionBlock.attention(q, k, v, mask, None)


@pytest.mark.clause("mha.static-attention")
@pytest.mark.own_evidence
@given(inp=per_head_inputs(), seed=seeds)
def test_attention_weights_are_distributions_the_output_averages_with(impl, device, inp: dict, seed: int) -> None:
    """``attention(q, k, v, None, None) -> (out, weights)``: weights >= 0, each row sums to 1 over the keys, and
    ``out == weights @ v``; the block keeps such rows in ``attention_scores`` [B, h, Lq, Lk]. Float64; the row sums
    and the product are compared at the float64 table's tolerance (a few roundings of a sum of <= 8 terms)."""
    config = {k: inp[k] for k in ("B", "h", "d_k", "Lq", "Lk")}
    q, k, v = (torch.as_tensor(inp[n], dtype=F64, device=device) for n in "qkv")
    with torch.no_grad():
        result = _static(impl, q, k, v, None)
    assert isinstance(result, tuple) and len(result) == 2, (
        f"attention(q, k, v, mask, dropout) must return (out, weights); got {type(result).__name__}")
    out, weights = result
    shape = (inp["B"], inp["h"], inp["Lq"], inp["Lk"])
    weights = check_output(weights, shape, component="attention weights", config=config)
    out = check_output(out, (inp["B"], inp["h"], inp["Lq"], inp["d_k"]), component="attention", config=config)
    wrong = {name: (lambda f=f: f(inp["q"], inp["k"], inp["v"], None)[1]) for name, f in M.ATTENTION.items()}
    with naming(weights, wrong, dtype=F64):  # a known mistake, named (reference.oracles.mistakes)
        assert bool((weights >= 0).all()), f"negative attention weight {float(weights.min()):.3e} {config}"
        sums = weights.sum(dim=-1)
        assert_close(sums, torch.ones_like(sums), component="attention weights' row sums over the keys",
                     config=config, dtype=F64)
    assert_close(out, weights @ v, component="attention output against weights @ v", config=config, dtype=F64,
                 expected_from_impl=True)
    d_model = inp["h"] * inp["d_k"]
    mha = construct(impl.MultiHeadAttentionBlock, d_model, inp["h"], 0.1, device=device, dtype=F64)
    randomize_parameters_(mha, seed)
    mha.eval()
    x, memory = (torch.as_tensor(_merged(inp[n]), dtype=F64, device=device) for n in "qk")
    with torch.no_grad():
        mha(x, memory, memory, None)
    kept = kept_weights(mha, shape, config=config)
    assert bool((kept >= 0).all()), f"attention_scores has a negative weight {float(kept.min()):.3e} {config}"
    kept_sums = kept.sum(dim=-1)
    assert_close(kept_sums, torch.ones_like(kept_sums), component="attention_scores' row sums over the keys",
                 config=config, dtype=F64)


@pytest.mark.clause("mask.zero-weight")
@pytest.mark.own_evidence
@given(inp=per_head_inputs(), data=st.data())
def test_attention_masking_keys_equals_removing_them(impl, device, inp: dict, data: st.DataObject) -> None:
    """A key-padding mask [B, 1, 1, Lk] (one visible set per batch element, at least one key masked and one kept):
    ``attention(q, k, v, mask)`` equals ``attention(q, k[visible], v[visible], None)`` for each batch element, in
    output and in the visible keys' weights. Float64, both sides the implementation's own: the float64 table's
    tolerance covers the different summation lengths (<= 8 terms)."""
    B, Lk = inp["B"], inp["Lk"]
    visible = np.zeros((B, Lk), dtype=bool)
    for b in range(B):
        keep = data.draw(st.lists(st.integers(0, Lk - 1), min_size=1, max_size=Lk - 1, unique=True), label="keep")
        visible[b, keep] = True
    config = {**{k: inp[k] for k in ("B", "h", "d_k", "Lq", "Lk")}, "visible": visible.tolist()}
    q, k, v = (torch.as_tensor(inp[n], dtype=F64, device=device) for n in "qkv")
    mask = torch.as_tensor(visible[:, None, None, :], device=device)
    with torch.no_grad():
        out, weights = _static(impl, q, k, v, mask)
        # a masking mistake, named when the masked output is that mistake's formula (reference.oracles.mistakes)
        wrong = {name: (lambda f=f: f(inp["q"], inp["k"], inp["v"], visible[:, None, None, :])[0])
                 for name, f in M.ATTENTION.items() if "mask" in name or "queries" in name}
        for b in range(B):
            keep = torch.as_tensor(np.flatnonzero(visible[b]), device=device)
            alone, alone_weights = _static(impl, q[b:b + 1], k[b:b + 1, :, keep], v[b:b + 1, :, keep], None)
            with naming(out, wrong, dtype=F64):
                assert_close(out[b:b + 1], alone, component="attention with masked keys against the keys removed",
                             config={**config, "batch": b}, dtype=F64, expected_from_impl=True)
            assert_close(weights[b:b + 1][..., keep], alone_weights,
                         component="visible keys' weights with masked keys against the keys removed",
                         config={**config, "batch": b}, dtype=F64, expected_from_impl=True)
