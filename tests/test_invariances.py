"""Invariances and algebra that hold whatever the reference: attention symmetries, batch independence, LayerNorm
moments and invariances, the embedding scale.

Everything runs in float64 with random, non-default parameters (``randomize_parameters_``), except the LayerNorm
large-offset accuracy check, which is about float32. A norm's ``eps`` in every bound and reference is the one the test
built it with (the contract's ``CONTRACT_EPS`` unless passed), never read back from the module.
"""

from __future__ import annotations

import pytest

import math

import numpy as np
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from reference.judge import conditioning, tolerances
from reference.oracles import numpy_ref, torch_ref
from reference.judge.compare import assert_close, assert_error_ratio, to_f64
from reference.spec.contract import build_model, construct, randomize_parameters_
from reference.kit.weights import CONTRACT_EPS, to_numpy
from tests.strategies import (
    AttentionInputs,
    ModelBatch,
    PermutedAttention,
    dense_attention_inputs,
    layer_norm_rows,
    log_scalings,
    model_batches,
    nonzero_shifts,
    permuted_attentions,
)
from tests.support import attention_results

F64 = torch.float64


def _t(a: np.ndarray, device: str, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.as_tensor(a, dtype=dtype, device=device)


def _attention(impl, d_model: int, h: int, device: str, seed: int = 0):
    mha = construct(impl.MultiHeadAttentionBlock, d_model, h, 0.0, device=device, dtype=F64).eval()
    return randomize_parameters_(mha, seed)


#: Permuting positions reorders only rounding (a BLAS kernel rounds a row by where it sits, softmax sums in another
#: order): weights may differ by ``value_tol`` plus ``PERMUTATION_ULPS * eps * S``, outputs by ``value_tol`` plus
#: ``PERMUTATION_ULPS * eps * (2 S + 1) * M``, with S the largest |score| (``Q K^T / sqrt(d_k)``, computed here
#: from the block's projections: a score is rounded to ~eps * S, and softmax moves a weight by at most twice a
#: score's error) and M the largest ``|W_o| max_j |V_j|`` (what a weight error moves an output by). Measured beyond
#: ``value_tol`` (scratch_transformer, 2 x 3000 random draws of each test, offset 1e4 included): up to 0.25 of these
#: units in weights (4.4e-9 absolute), 0.007 in outputs (8.7e-9), so 8 leaves 32x; ``value_tol`` alone failed 2 of
#: 6 thorough seeds. A position-mixing bug moves outputs by their own size.
PERMUTATION_ULPS: float = 8.0


def _projection(x: torch.Tensor, linear) -> torch.Tensor:
    """``x W^T + b`` of a contract projection (``weight`` [out, in], optional ``bias``), in float64."""
    out = x @ linear.weight.detach().T
    bias = getattr(linear, "bias", None)
    return out if bias is None else out + bias.detach()


def _permutation_tolerances(mha, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, h: int
                            ) -> tuple[tuple[float, float], tuple[float, float]]:
    """((rtol, atol) of the weights, (rtol, atol) of the output) for comparing an attention call with its
    position-permuted twin (``PERMUTATION_ULPS``); q [B, Lq, d], k, v [B, Lk, d]."""
    B, Lq, d = q.shape
    d_k = d // h

    def heads(t: torch.Tensor) -> torch.Tensor:  # [B, L, d] -> [B, h, L, d_k]
        return t.view(t.shape[0], t.shape[1], h, d_k).transpose(1, 2)

    Q, K, V = (heads(_projection(t, getattr(mha, name))) for t, name in ((q, "w_q"), (k, "w_k"), (v, "w_v")))
    S = float((Q @ K.transpose(-2, -1)).abs().max()) / math.sqrt(d_k)
    v_max = V.abs().amax(dim=-2).reshape(B, d)  # (B, d): per feature, the largest |V_j|
    M = float((v_max @ mha.w_o.weight.detach().abs().T).max())
    rtol, atol = tolerances.value_tol(F64)
    unit = PERMUTATION_ULPS * tolerances.eps(F64)
    return (rtol, atol + unit * S), (rtol, atol + unit * (2 * S + 1) * M)


# ------------------------------------------------------------------------------------------------ attention
@pytest.mark.own_evidence
@pytest.mark.clause("mha.formula")
@given(case=permuted_attentions(self_attention=True))
def test_multi_head_attention_self_attention_is_permutation_equivariant(impl, device: str,
                                                                       case: PermutedAttention) -> None:
    """Unmasked self-attention: ``mha(x[:, p]) == mha(x)[:, p]``, weights permuted on both position axes."""
    cfg, perm = case.cfg, list(case.perm)
    note(f"{cfg}, scale={case.scale}, perm={perm}")
    mha = _attention(impl, cfg.d_model, cfg.h, device)
    x = _t(case.q, device)
    config = {"cfg": cfg, "scale": case.scale}
    with torch.no_grad():
        out, weights = attention_results(mha, mha(x, x, x, None), cfg, config=config)
        out_p, weights_p = attention_results(mha, mha(x[:, perm], x[:, perm], x[:, perm], None), cfg, config=config)
        (w_rtol, w_atol), (o_rtol, o_atol) = _permutation_tolerances(mha, x, x, x, cfg.h)
    assert_close(out_p, out[:, perm], component="self-attention of permuted positions", config=config,
                 rtol=o_rtol, atol=o_atol)
    assert_close(weights_p, weights[:, :, perm][:, :, :, perm], component="weights of permuted positions",
                 config=config, rtol=w_rtol, atol=w_atol)


@pytest.mark.own_evidence("mha.formula")
@pytest.mark.clause("mha.formula", "mask.semantics")
@given(case=permuted_attentions(self_attention=False), masked=st.booleans())
def test_multi_head_attention_invariant_to_permuting_key_value_pairs(impl, device: str, case: PermutedAttention,
                                                                     masked: bool) -> None:
    """Permuting key/value pairs together (and a key-padding mask with them) leaves the output unchanged and
    permutes the weights' key axis."""
    cfg, perm = case.cfg, list(case.perm)
    note(f"{cfg}, scale={case.scale}, perm={perm}, key_lengths={case.key_lengths if masked else None}")
    mha = _attention(impl, cfg.d_model, cfg.h, device)
    q, k, v = _t(case.q, device), _t(case.k, device), _t(case.v, device)
    mask = None
    if masked:
        lengths = torch.as_tensor(case.key_lengths, device=device)
        mask = (torch.arange(cfg.Lk, device=device)[None, :] < lengths[:, None])[:, None, None, :]  # (B,1,1,Lk)
    config = {"cfg": cfg, "scale": case.scale, "masked": masked}
    with torch.no_grad():
        out, weights = attention_results(mha, mha(q, k, v, mask), cfg, config=config)
        out_p, weights_p = attention_results(
            mha, mha(q, k[:, perm], v[:, perm], None if mask is None else mask[..., perm]), cfg, config=config)
        (w_rtol, w_atol), (o_rtol, o_atol) = _permutation_tolerances(mha, q, k, v, cfg.h)
    assert_close(out_p, out, component="attention over permuted key/value pairs", config=config, rtol=o_rtol,
                 atol=o_atol)
    assert_close(weights_p, weights[..., perm], component="weights over permuted key/value pairs", config=config,
                 rtol=w_rtol, atol=w_atol)


@pytest.mark.own_evidence
@pytest.mark.clause("mha.static-attention")
@given(inp=dense_attention_inputs(max_len=10, max_d_model=32, scales=("tiny", "unit")),
       shift_seed=st.integers(0, 2**32 - 1), magnitude=st.sampled_from((1.0, 1e2, 1e4)))
def test_attention_softmax_invariant_to_a_constant_added_to_a_score_row(impl, device: str, inp: AttentionInputs,
                                                                         shift_seed: int, magnitude: float) -> None:
    """Adding one vector u to every key adds ``q_i . u / sqrt(d_k)`` to score row i: the weights do not change
    (with masks too). At |u| = 1e4 a softmax without the max subtraction overflows."""
    cfg = inp.cfg
    note({**inp.describe(), "magnitude": magnitude, "shift_seed": shift_seed})

    def heads(a: np.ndarray) -> torch.Tensor:  # [B, L, d] -> [B, h, L, d_k]
        t = _t(a, device)
        return t.view(t.shape[0], t.shape[1], cfg.h, cfg.d_k).transpose(1, 2)

    query = heads(inp.x)
    key = query if inp.memory is None else heads(inp.memory)
    value = key.flip(-1)
    u = np.random.default_rng(shift_seed).uniform(-magnitude, magnitude, (cfg.B, cfg.h, 1, cfg.d_k))
    u = _t(u, device)
    mask = None if inp.mask is None else torch.as_tensor(inp.mask, device=device)
    _, weights = impl.MultiHeadAttentionBlock.attention(query, key, value, mask, None)
    _, weights_shifted = impl.MultiHeadAttentionBlock.attention(query, key + u, value, mask, None)
    spread = float((query.abs() @ (key.abs() + u.abs()).transpose(-2, -1)).max()) / math.sqrt(cfg.d_k)
    rtol, atol = tolerances.value_tol(F64)
    atol += tolerances.SOFTMAX_SHIFT_ULPS * tolerances.eps(F64) * spread
    assert_close(weights_shifted, weights, component="softmax weights after a per-row score shift",
                 config={**inp.describe(), "magnitude": magnitude}, rtol=rtol, atol=atol)


@pytest.mark.blackbox
@pytest.mark.clause("transformer.compose")
@given(batch=model_batches(min_batch=2))
def test_transformer_batch_independence(impl, device: str, batch: ModelBatch) -> None:
    """Each sequence's encoder output, decoder output and logits are the same alone as inside the batch."""
    note(batch.describe())
    model = randomize_parameters_(build_model(impl, batch.cfg, device=device, dtype=F64).eval(), 0)
    Ls, Lt = batch.src.shape[1], batch.tgt.shape[1]
    src, tgt = torch.as_tensor(batch.src, device=device), torch.as_tensor(batch.tgt, device=device)
    lengths = torch.as_tensor(batch.src_lengths, device=device)
    src_mask = (torch.arange(Ls, device=device)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, Ls)
    tgt_mask = torch.tril(torch.ones(1, Lt, Lt, dtype=torch.bool, device=device))

    def run(s, t, m):
        memory = model.encode(s, m)
        decoded = model.decode(memory, m, t, tgt_mask)
        return memory, decoded, model.project(decoded)

    with torch.no_grad():
        together = run(src, tgt, src_mask)
        for b in range(src.shape[0]):
            alone = run(src[b:b + 1], tgt[b:b + 1], src_mask[b:b + 1])
            for name, got, want in zip(("encode", "decode", "logits"), alone, together):
                assert_close(got, want[b:b + 1], component=f"{name} of sequence {b} alone vs in the batch",
                             config=batch.describe())


# ------------------------------------------------------------------------------------------------ LayerNorm
def _layer_norm(impl, features: int, device: str, dtype: torch.dtype = F64, eps: float | None = None):
    args = (features,) if eps is None else (features, eps)
    return construct(impl.LayerNormalization, *args, device=device, dtype=dtype)


def _assert_within_rounding(actual: torch.Tensor, expected: torch.Tensor, x: torch.Tensor, shift: float,
                            alpha: torch.Tensor, eps: float, *, component: str, config: dict) -> None:
    """|actual - expected| <= value_tol + LAYER_NORM_INPUT_ULPS * eps64 * max|alpha| * (max|x_row| + |shift|)
    / sqrt(var_row + eps), per row (x: [R, d], the unshifted/unscaled input)."""
    __tracebackhide__ = True
    rtol, atol = tolerances.value_tol(F64)
    var = x.var(dim=-1, correction=0, keepdim=True)
    rounding = (tolerances.LAYER_NORM_INPUT_ULPS * tolerances.eps(F64) * float(alpha.abs().max())
                * (x.abs().amax(dim=-1, keepdim=True) + abs(shift)) / torch.sqrt(var + eps))
    allowed = atol + rtol * expected.abs() + rounding
    err = (actual - expected).abs()
    assert bool((err <= allowed).all()), (
        f"{component} {config}: {int((err > allowed).sum())} / {err.numel()} entries off; max error "
        f"{float(err.max()):.3e}, worst excess {float((err - allowed).max()):.3e} over the rounding bound")


@pytest.mark.clause("ln.biased-variance")
@given(rows=layer_norm_rows(), alpha=st.floats(0.25, 4.0), bias=st.floats(-2.0, 2.0))
def test_layer_normalization_row_mean_is_bias_and_std_is_alpha(impl, device: str, rows, alpha: float,
                                                               bias: float) -> None:
    """With constant alpha and bias: each row's output mean is ``bias`` and its biased std is ``alpha`` up to eps,
    i.e. within [alpha * sqrt(var / (var + eps)), alpha] (an unbiased variance falls a factor sqrt((d-1)/d) short).
    Both up to the rounding of the row mean (``LAYER_NORM_INPUT_ULPS``: it grows with |x| / std at offset 1e4)."""
    scale, x = rows
    note(f"scale={scale}, x shape={x.shape}, alpha={alpha}, bias={bias}")
    norm = _layer_norm(impl, x.shape[1], device)
    with torch.no_grad():
        norm.alpha.fill_(alpha)
        norm.bias.fill_(bias)
        xt = _t(x, device)[None]  # [1, R, d]: the contract's [B, L, d]
        y = to_f64(norm(xt))
    x64 = to_f64(xt)
    rtol, atol = tolerances.value_tol(F64)
    var = x64.var(dim=-1, correction=0)
    rounding = (tolerances.LAYER_NORM_INPUT_ULPS * tolerances.eps(F64) * alpha * x64.abs().amax(dim=-1)
                / torch.sqrt(var + CONTRACT_EPS))
    config = {"scale": scale, "d": x.shape[1], "alpha": alpha, "bias": bias}
    mean = y.mean(dim=-1)
    assert bool(((mean - bias).abs() <= atol + rtol * abs(bias) + rounding).all()), (
        f"row mean of LayerNorm {config} is not bias: {mean.tolist()} (allowed +-{(atol + rounding).tolist()})")
    std = y.std(dim=-1, correction=0)
    low = alpha * torch.sqrt(var / (var + CONTRACT_EPS))
    slack = rtol * alpha + atol + rounding
    assert bool(((std <= alpha + slack) & (std >= low - slack)).all()), (
        f"row std of LayerNorm {config} outside [alpha sqrt(var / (var + eps)), alpha]: std {std.tolist()}, "
        f"lower bounds {low.tolist()}, alpha {alpha}")


@pytest.mark.clause("ln.biased-variance")
@given(rows=layer_norm_rows(), shift=nonzero_shifts(), seed=st.integers(0, 2**31 - 1))
def test_layer_normalization_invariant_to_adding_a_constant(impl, device: str, rows, shift: float,
                                                            seed: int) -> None:
    """``LN(x + c) == LN(x)`` up to the rounding of ``x + c`` (random alpha and bias; 1e-3 <= |c| <= 1e3)."""
    scale, x = rows
    note(f"scale={scale}, x shape={x.shape}, c={shift}")
    norm = randomize_parameters_(_layer_norm(impl, x.shape[1], device), seed)
    xt = _t(x, device)[None]  # [1, R, d]: the contract's [B, L, d]
    with torch.no_grad():
        y, y_shifted = norm(xt), norm(xt + shift)
    _assert_within_rounding(to_f64(y_shifted), to_f64(y), to_f64(xt), shift, to_f64(norm.alpha), CONTRACT_EPS,
                            component="LN(x + c) vs LN(x)", config={"scale": scale, "c": shift})


@pytest.mark.clause("ln.biased-variance")
@given(rows=layer_norm_rows(), log_s=log_scalings(), seed=st.integers(0, 2**31 - 1))
def test_layer_normalization_invariant_to_positive_scaling_up_to_eps(impl, device: str, rows, log_s: float,
                                                                     seed: int) -> None:
    """``LN_eps(s x) == LN_{eps / s^2}(x)`` for s > 0 (s in [1e-2, 1/1.1] or [1.1, 1e2]): scaling is invariant but
    for eps, which scales with var (eps inside the square root, next to the biased variance)."""
    scale, x = rows
    s = math.exp(log_s)
    note(f"scale={scale}, x shape={x.shape}, s={s}")
    norm = randomize_parameters_(_layer_norm(impl, x.shape[1], device), seed)
    rescaled = _layer_norm(impl, x.shape[1], device, eps=CONTRACT_EPS / s**2)
    rescaled.load_state_dict(norm.state_dict())
    xt = _t(x, device)[None]  # [1, R, d]: the contract's [B, L, d]
    with torch.no_grad():
        y_scaled, y = norm(xt * s), rescaled(xt)
    _assert_within_rounding(to_f64(y_scaled), to_f64(y), to_f64(xt), 0.0, to_f64(norm.alpha), CONTRACT_EPS / s**2,
                            component="LN_eps(s x) vs LN_{eps/s^2}(x)", config={"scale": scale, "s": s})


#: The offset test's second look at its rows: the same noise without the 1e4 offset (``x - 1e4`` is exact in
#: float32, Sterbenz), times this power of two (exact). At the offset, a correct float32 algorithm errs by up to
#: 4.8e-3 (``F.layer_norm``, d = 32..64), more than a gain off by 1e-3 (<= 3.4e-3) or an eps of 1e-5 (<= 1e-4) err:
#: no allowance that admits every correct algorithm there can reject them. Off the offset nothing is
#: ill-conditioned, and at 1/16 scale the row variance is <= 2^-8, so eps is >= 2.6e-4 of it: measured
#: (docs/tolerances.md) correct algorithms use <= 0.14 of the error-ratio allowance there, an eps of 1e-5 >= 480x
#: it, a gain off by 1e-3 >= 10x, the blog's unbiased std + eps >= 2700x, at every d from 2 to 64.
LN_OFFSET_NOISE_SCALE = 2.0 ** -4


@pytest.mark.clause("ln.biased-variance", "numerics.float32")
@given(rows=layer_norm_rows(scales_=("offset",)), seed=st.integers(0, 2**31 - 1))
def test_layer_normalization_accurate_with_large_offset_in_float32(impl, device: str, rows, seed: int) -> None:
    """float32 rows 1e4 + noise: error against the float64 LayerNorm at most K times torch's own float32
    ``F.layer_norm`` error plus the floor, or the conditioning bound (``LN_COND_FACTOR`` times the row's Monte
    Carlo spread: the rounding error of the standard two-pass algorithm there), whichever is larger. A one-pass
    E[x^2] - E[x]^2 variance errs by the square of the condition. Then the same noise off the offset, at
    ``LN_OFFSET_NOISE_SCALE`` (well conditioned): the same rule, where an unbiased variance, another eps or a gain
    off by 1e-3 can no longer hide behind the offset's rounding."""
    scale, x = rows
    note(f"x shape={x.shape}")
    norm = randomize_parameters_(_layer_norm(impl, x.shape[1], device, dtype=torch.float32), seed)
    x32 = _t(x, device, torch.float32)[None]  # [1, R, d]: the contract's [B, L, d]
    noise32 = (x32 - 1e4) * LN_OFFSET_NOISE_SCALE  # exact: Sterbenz, then a power of two
    for what, inputs in (("at offset 1e4", x32), (f"noise without the offset, x {LN_OFFSET_NOISE_SCALE:g}", noise32)):
        with torch.no_grad():
            out = norm(inputs)
            torch_out = torch_ref.layer_norm(inputs, norm.alpha, norm.bias, CONTRACT_EPS)

        def oracle(inputs: torch.Tensor = inputs) -> np.ndarray:
            return numpy_ref.layer_norm(to_numpy(inputs), to_numpy(norm.alpha), to_numpy(norm.bias), CONTRACT_EPS)

        assert_error_ratio(out, torch_out, oracle(), component=f"LayerNormalization {what}", dtype=torch.float32,
                           config={"d": x.shape[1], "rows": x.shape[0]}, label="F.layer_norm float32",
                           sensitivity=lambda oracle=oracle: conditioning.sensitivity(
                               oracle, conditioning.unit_roundoff(torch.float32)),
                           cond_factor=conditioning.LN_COND_FACTOR)


#: Bound of ``test_layer_normalization_offset_independent_accuracy``, in units of float32 roundoff (2^-24): a
#: corrected two-pass LayerNorm measured 2.7-7.5 at d = 8..512 (x - mean is exact by Sterbenz once the mean's own
#: rounding is removed; what is left is the second mean, the variance and rsqrt); an uncorrected two-pass or a
#: global first mean measured 500-97000 at offsets 1e3-1e4 (docs/mutation.md).
LN_OFFSET_ROUNDOFFS = 64


@pytest.mark.strict("float32 LayerNorm is accurate whatever the rows' offsets")
@pytest.mark.clause("strict.ln-offset-accurate")
@given(d=st.integers(8, 256), rows=st.integers(2, 12), log_offset=st.floats(math.log(1e3), math.log(1e4)),
       seed=st.integers(0, 2**31 - 1))
def test_layer_normalization_offset_independent_accuracy(impl, device: str, d: int, rows: int, log_offset: float,
                                                         seed: int) -> None:
    """Rows of unit noise, every other one shifted by an offset in [1e3, 1e4]: the float32 output (alpha = 1,
    bias = 0, so it is the normalised row itself, of unit scale) is within ``LN_OFFSET_ROUNDOFFS`` float32
    roundoffs of the float64 formula applied to the same float32 input, in every row."""
    offset = math.exp(log_offset)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (1, rows, d))  # [B, L, d]: the contract's input shape (any [..., d] is strict)
    x[:, ::2] += offset
    x32 = _t(x, device, torch.float32)
    note(f"d={d}, rows={rows}, offset={offset:.1f}")
    norm = _layer_norm(impl, d, device, dtype=torch.float32)
    with torch.no_grad():
        out = norm(x32)
    expected = numpy_ref.layer_norm(to_numpy(x32), np.ones(d), np.zeros(d), CONTRACT_EPS)
    assert_close(out, expected, component="LayerNormalization float32, rows with mixed offsets",
                 config={"d": d, "rows": rows, "offset": round(offset, 1), "bound": f"{LN_OFFSET_ROUNDOFFS} u32"},
                 rtol=0.0, atol=LN_OFFSET_ROUNDOFFS * conditioning.unit_roundoff(torch.float32))


# ------------------------------------------------------------------------------------------------ embedding
@pytest.mark.clause("embed.scaled-lookup")
@given(d_model=st.integers(1, 64), vocab=st.integers(1, 50),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 8)), dtype=st.sampled_from((torch.float32, F64)),
       token_seed=st.integers(0, 2**31 - 1))
def test_input_embeddings_row_is_table_row_times_sqrt_d_model(impl, device: str, d_model: int, vocab: int, shape,
                                                              dtype: torch.dtype, token_seed: int) -> None:
    """``InputEmbeddings(x)[b, l] == embedding.weight[x[b, l]] * sqrt(d_model)``."""
    note(f"d_model={d_model}, vocab={vocab}, shape={shape}, dtype={dtype}")
    emb = construct(impl.InputEmbeddings, d_model, vocab, device=device, dtype=dtype)
    tokens = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(token_seed)).to(device)
    with torch.no_grad():
        out = emb(tokens)
    expected = to_f64(emb.embedding.weight)[tokens.cpu()] * math.sqrt(d_model)
    assert_close(out, expected, component="InputEmbeddings", config={"d_model": d_model, "vocab": vocab},
                 dtype=dtype)
