"""The float64 NumPy oracle checked on its own: sharp properties and hand-computed values, no implementation needed.

Only the trace-key test touches an implementation, and only for the set of its contract module paths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reference.oracles import numpy_ref as R
from reference.report.hooks import contract_class
from reference.kit.components import REQUIRED_NAMES
from reference.spec.contract import ModelConfig, build_model, randomize_parameters_
from reference.kit.weights import extract_weights
from tests.strategies import AttentionConfig, attention_configs, dense_arrays, masks, model_configs

pytestmark = pytest.mark.clause("kit")

#: The oracle's own float64 rounding on these small problems stays within a few hundred eps.
F64 = dict(rtol=1e-13, atol=1e-13)
CONTRACT_CLASSES = frozenset(REQUIRED_NAMES) - {"build_transformer"}


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------------ softmax
@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                    elements=st.floats(-700, 700, allow_nan=False)),
       shift=st.floats(-300, 300, allow_nan=False))
def test_softmax_rows_sum_to_one_and_shift_invariant(x: np.ndarray, shift: float) -> None:
    p = R.softmax(x)
    assert np.all(p >= 0) and np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, **F64)
    np.testing.assert_allclose(R.softmax(x + shift), p, rtol=1e-12, atol=1e-300)


def test_softmax_all_minus_inf_row_is_zero_not_nan() -> None:
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]])
    p = R.softmax(x)
    assert p[0, 1] == 0.0 and np.all(p[1] == 0.0)
    np.testing.assert_allclose(p[0, [0, 2]], [1 / (1 + math.e), math.e / (1 + math.e)], **F64)


# ------------------------------------------------------------------------------------------------ layer norm
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 33)),
                    elements=st.floats(-1e3, 1e3, allow_nan=False)),
       offset=st.sampled_from([0.0, 1e4]))
def test_layer_norm_has_zero_mean_and_biased_unit_variance(x: np.ndarray, offset: float) -> None:
    """With alpha = 1, bias = 0: mean(y) = 0 and mean(y^2) = var / (var + eps), var the *biased* variance."""
    x = x + offset
    d = x.shape[-1]
    y = R.layer_norm(x, np.ones(d), np.zeros(d), eps=1e-6)
    var = np.var(x, axis=-1, keepdims=True)  # ddof=0
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-9)
    np.testing.assert_allclose((y * y).mean(axis=-1, keepdims=True), var / (var + 1e-6), rtol=1e-9, atol=1e-12)


def test_layer_norm_matches_hand_computed_value() -> None:
    """x = [1, 2, 3]: mean 2, biased var 2/3; alpha = [1, 2, 3], bias = [0, 1, -1], eps = 0.01."""
    y = R.layer_norm(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, -1.0]), eps=0.01)
    s = math.sqrt(2 / 3 + 0.01)
    np.testing.assert_allclose(y, [-1 / s, 1.0, 3 / s - 1], **F64)


# ------------------------------------------------------------------------------------------------ attention
@st.composite
def _attention_arrays(draw, *, mask_kind: str | None = None, allow_fully_masked: bool = True):
    cfg = draw(attention_configs(max_len=8, max_d_model=16))
    q = draw(dense_arrays((cfg.B, cfg.h, cfg.Lq, cfg.d_k)))
    k = draw(dense_arrays((cfg.B, cfg.h, cfg.Lk, cfg.d_k)))
    v = draw(dense_arrays((cfg.B, cfg.h, cfg.Lk, cfg.d_k)))
    kind, mask = draw(masks(cfg, kind=mask_kind, allow_fully_masked=allow_fully_masked))
    return cfg, q, k, v, kind, mask


@given(case=_attention_arrays(mask_kind="none"))
def test_scaled_dot_product_attention_all_visible_mask_equals_no_mask(case) -> None:
    cfg, q, k, v, _, _ = case
    out, w = R.scaled_dot_product_attention(q, k, v, None)
    for visible in (np.ones((1, 1, cfg.Lq, cfg.Lk), dtype=bool), np.ones((cfg.Lq, cfg.Lk), dtype=np.int64)):
        out_m, w_m = R.scaled_dot_product_attention(q, k, v, visible)
        np.testing.assert_array_equal(out_m, out)
        np.testing.assert_array_equal(w_m, w)


@given(case=_attention_arrays())
def test_scaled_dot_product_attention_masked_keys_get_exactly_zero(case) -> None:
    """Masked keys weigh 0; rows with a visible key sum to 1; fully masked rows are all-zero weights and output."""
    cfg, q, k, v, kind, mask = case
    note(f"{cfg}, mask={kind}")
    out, w = R.scaled_dot_product_attention(q, k, v, mask)
    visible = np.broadcast_to(np.ones(1, bool) if mask is None else mask, w.shape)
    assert np.all(w[~visible] == 0.0)
    has_key = visible.any(axis=-1)  # (B, h, Lq)
    np.testing.assert_allclose(w.sum(axis=-1)[has_key], 1.0, **F64)
    assert np.all(w[~has_key] == 0.0) and np.all(out[~has_key] == 0.0)
    # The masked keys' values cannot leak in: changing them leaves the output unchanged.
    masked_any_query = ~visible.any(axis=-2, keepdims=True).transpose(0, 1, 3, 2)  # (B, h, Lk, 1)
    v2 = np.where(masked_any_query, v + 1e3, v)
    np.testing.assert_array_equal(R.scaled_dot_product_attention(q, k, v2, mask)[0], out)


def test_scaled_dot_product_attention_matches_hand_computed_value() -> None:
    """d_k = 2: q = [1, 0], keys e1, e2 -> scores [1/sqrt 2, 0]; the second key masked leaves v[0] alone."""
    q = np.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    k = np.eye(2).reshape(1, 1, 2, 2)
    v = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    a = math.exp(1 / math.sqrt(2))
    w0, w1 = a / (a + 1), 1 / (a + 1)
    out, w = R.scaled_dot_product_attention(q, k, v)
    np.testing.assert_allclose(w.ravel(), [w0, w1], **F64)
    np.testing.assert_allclose(out.ravel(), [w0 * 1 + w1 * 3, w0 * 2 + w1 * 4], **F64)
    out, w = R.scaled_dot_product_attention(q, k, v, np.array([[1, 0]]))
    np.testing.assert_array_equal(w.ravel(), [1.0, 0.0])
    np.testing.assert_array_equal(out.ravel(), [1.0, 2.0])


@given(cfg=attention_configs(max_len=6, max_d_model=12), seed=st.integers(0, 2**16))
def test_split_and_combine_heads_are_inverse_and_slice_features(cfg: AttentionConfig, seed: int) -> None:
    x = _rng(seed).standard_normal((cfg.B, cfg.Lq, cfg.d_model))
    heads = R.split_heads(x, cfg.h)
    assert heads.shape == (cfg.B, cfg.h, cfg.Lq, cfg.d_k)
    for i in range(cfg.h):
        np.testing.assert_array_equal(heads[:, i], x[..., i * cfg.d_k:(i + 1) * cfg.d_k])
    np.testing.assert_array_equal(R.combine_heads(heads), x)


@given(cfg=attention_configs(max_len=6, max_d_model=12), seed=st.integers(0, 2**16),
       biased=st.sets(st.sampled_from(R.PROJECTIONS)))
def test_multi_head_attention_equals_per_head_attention_concatenated(cfg: AttentionConfig, seed: int,
                                                                     biased: set[str]) -> None:
    """Head i uses rows i*d_k:(i+1)*d_k of W_q, W_k, W_v (and of their biases); W_o mixes the concatenation
    (paper, section 3.2.2), plus b_o. A projection without a bias in the mapping adds nothing."""
    note(f"biased={sorted(biased)}")
    rng = _rng(seed)
    d, dk = cfg.d_model, cfg.d_k
    w = {f"w_{n}.weight": rng.standard_normal((d, d)) / math.sqrt(d) for n in "qkvo"}
    w |= {f"{name}.bias": rng.uniform(-0.5, 0.5, d) for name in sorted(biased)}
    b = {name: w.get(f"{name}.bias", np.zeros(d)) for name in R.PROJECTIONS}
    q = rng.standard_normal((cfg.B, cfg.Lq, d))
    kv = rng.standard_normal((cfg.B, cfg.Lk, d))
    out, weights = R.multi_head_attention(q, kv, kv, None, w, cfg.h)
    heads = []
    for i in range(cfg.h):
        rows = slice(i * dk, (i + 1) * dk)
        qi = q @ w["w_q.weight"][rows].T + b["w_q"][rows]
        ki = kv @ w["w_k.weight"][rows].T + b["w_k"][rows]
        vi = kv @ w["w_v.weight"][rows].T + b["w_v"][rows]
        p = np.exp(qi @ np.swapaxes(ki, -1, -2) / math.sqrt(dk))
        p /= p.sum(axis=-1, keepdims=True)
        np.testing.assert_allclose(weights[:, i], p, **F64)
        heads.append(p @ vi)
    np.testing.assert_allclose(out, np.concatenate(heads, axis=-1) @ w["w_o.weight"].T + b["w_o"], **F64)


# ------------------------------------------------------------------------------------------------ embeddings
@given(d=st.integers(1, 33), seq_len=st.integers(1, 40))
def test_positional_encoding_table_matches_formula_elementwise(d: int, seq_len: int) -> None:
    """Row 0 is [0, 1, 0, 1, ...]; every entry equals sin/cos(pos / 10000^(2i/d)) computed with ``math``."""
    pe = R.positional_encoding_table(seq_len, d)
    assert pe.shape == (seq_len, d)
    np.testing.assert_array_equal(pe[0], [float(j % 2) for j in range(d)])
    for pos in {0, min(1, seq_len - 1), seq_len // 2, seq_len - 1}:
        for j in range(d):
            angle = pos / 10000 ** ((j - j % 2) / d)
            assert pe[pos, j] == pytest.approx(math.sin(angle) if j % 2 == 0 else math.cos(angle), rel=1e-13,
                                               abs=1e-13), (pos, j)


def test_embedding_scales_rows_by_sqrt_d_model() -> None:
    table = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.testing.assert_array_equal(R.embedding(np.array([[2, 0]]), table), np.array([[table[2], table[0]]]) * 2.0)


# ------------------------------------------------------------------------------------------------ residual
@given(x=dense_arrays((2, 3, 5)))
def test_residual_is_pre_norm(x: np.ndarray) -> None:
    """``x + sublayer(norm(x))``: a zero sublayer returns x exactly; the identity returns x + norm(x)."""
    w = {"norm.alpha": np.linspace(0.5, 1.5, 5), "norm.bias": np.linspace(-0.5, 0.5, 5)}
    np.testing.assert_array_equal(R.residual(x, np.zeros_like, w, variant="pre-norm"), x)
    np.testing.assert_allclose(R.residual(x, lambda y: y, w, variant="pre-norm"),
                               x + R.layer_norm(x, w["norm.alpha"], w["norm.bias"]), **F64)


@given(x=dense_arrays((2, 3, 5)))
def test_residual_post_norm_normalises_the_sum(x: np.ndarray) -> None:
    """``norm(x + sublayer(x))``: a zero sublayer returns norm(x) exactly; the identity returns norm(2x); the
    sublayer sees x itself."""
    w = {"norm.alpha": np.linspace(0.5, 1.5, 5), "norm.bias": np.linspace(-0.5, 0.5, 5)}
    norm = lambda z: R.layer_norm(z, w["norm.alpha"], w["norm.bias"])  # noqa: E731
    seen = []
    np.testing.assert_array_equal(R.residual(x, lambda y: seen.append(y) or np.zeros_like(y), w,
                                             variant="post-norm"), norm(x))
    np.testing.assert_array_equal(seen[0], x)
    np.testing.assert_allclose(R.residual(x, lambda y: y, w, variant="post-norm"), norm(2 * x), **F64)


# ------------------------------------------------------------------------------------------------ model and trace
@given(cfg=model_configs(max_d_model=16, max_N=2, max_len=6))
def test_trace_keys_are_exactly_the_contract_module_paths(impl, cfg: ModelConfig) -> None:
    """``trace`` records one entry per contract submodule (named_modules path) plus one ':weights' per attention."""
    model = randomize_parameters_(build_model(impl, cfg), seed=0)
    expected = {name for name, m in model.named_modules() if name and contract_class(m) in CONTRACT_CLASSES}
    attention = {name for name, m in model.named_modules() if contract_class(m) == "MultiHeadAttentionBlock"}
    rng = _rng(0)
    src = rng.integers(0, cfg.src_vocab_size, (2, cfg.src_seq_len))
    tgt = rng.integers(0, cfg.tgt_vocab_size, (2, cfg.tgt_seq_len))
    trace: dict[str, np.ndarray] = {}
    logits = R.transformer(src, tgt, None, None, extract_weights(model), cfg.h, trace=trace)
    assert {k for k in trace if R.WEIGHTS_SUFFIX not in k} == expected
    assert {k[:-len(R.WEIGHTS_SUFFIX)] for k in trace if k.endswith(R.WEIGHTS_SUFFIX)} == attention
    np.testing.assert_array_equal(trace["projection_layer"], logits)
    np.testing.assert_array_equal(trace["encoder"], trace["encoder.norm"])  # a stack's output is its final norm's
    for name in attention:
        batch, len_q, _ = trace[name].shape
        assert trace[name + R.WEIGHTS_SUFFIX].shape[:3] == (batch, cfg.h, len_q)


def test_encoder_block_matches_hand_composed_formula() -> None:
    """One encoder block written out from the paper's equations with a causal mask, h = 2, d = 4, d_ff = 3."""
    rng = _rng(7)
    d, h, d_ff, L = 4, 2, 3, 3
    w = {f"self_attention_block.w_{n}.weight": rng.standard_normal((d, d)) for n in "qkvo"}
    w |= {"feed_forward_block.linear_1.weight": rng.standard_normal((d_ff, d)),
          "feed_forward_block.linear_1.bias": rng.standard_normal(d_ff),
          "feed_forward_block.linear_2.weight": rng.standard_normal((d, d_ff)),
          "feed_forward_block.linear_2.bias": rng.standard_normal(d)}
    for i in range(2):
        w[f"residual_connections.{i}.norm.alpha"] = rng.uniform(0.5, 1.5, d)
        w[f"residual_connections.{i}.norm.bias"] = rng.uniform(-0.5, 0.5, d)
    x = rng.standard_normal((1, L, d))
    causal = np.tril(np.ones((L, L), dtype=bool))

    def norm(z, i):
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        return (w[f"residual_connections.{i}.norm.alpha"] * (z - mu) / np.sqrt(var + 1e-6)
                + w[f"residual_connections.{i}.norm.bias"])

    y = norm(x, 0)[0]  # (L, d)
    heads = []
    for j in range(h):
        r = slice(2 * j, 2 * j + 2)
        qj, kj, vj = (y @ w[f"self_attention_block.w_{n}.weight"][r].T for n in "qkv")
        s = np.where(causal, qj @ kj.T / math.sqrt(2), -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        heads.append((p / p.sum(-1, keepdims=True)) @ vj)
    x1 = x + (np.concatenate(heads, -1) @ w["self_attention_block.w_o.weight"].T)[None]
    z = norm(x1, 1)
    hidden = np.maximum(z @ w["feed_forward_block.linear_1.weight"].T + w["feed_forward_block.linear_1.bias"], 0)
    x2 = x1 + hidden @ w["feed_forward_block.linear_2.weight"].T + w["feed_forward_block.linear_2.bias"]
    np.testing.assert_allclose(R.encoder_block(x, causal, w, h, variant="pre-norm"), x2, **F64)
