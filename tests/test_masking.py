"""Masking: causality, padding invariance, zero weight on masked keys, and every accepted mask form agreeing.

Contract: a mask is None or a bool/integer tensor broadcastable to [B, h, Lq, Lk], nonzero = may attend; masked
keys get exactly zero weight; a row with no visible key stays finite. Models run in float64 with random,
non-default parameters; masks that drive them are built here (``torch.tril``, comparisons) as bool tensors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from reference.judge.compare import assert_close
from reference.kit import guard
from reference.spec.contract import build_model, construct, randomize_parameters_
from reference.judge.precision import diagnose_check, explained
from tests.strategies import (
    AttentionConfig,
    AttentionInputs,
    ModelBatch,
    PerturbedBatch,
    causal_perturbations,
    dense_attention_inputs,
    int_mask_twins,
    mask_forms,
    padding_perturbations,
    token_batches,
)
from tests.support import MODEL_GIVEN, attention_results, skip_unless_extras

F64 = torch.float64


def causal(length: int, device: str) -> torch.Tensor:
    """Bool[1, L, L]: query t sees keys <= t."""
    return torch.tril(torch.ones(1, length, length, dtype=torch.bool, device=device))


def key_padding(lengths, length: int, device: str) -> torch.Tensor:
    """Bool[B, 1, 1, L]: True at the first ``lengths[b]`` positions of sequence b."""
    real = torch.arange(length, device=device)[None, :] < torch.as_tensor(lengths, device=device)[:, None]
    return real[:, None, None, :]


def _model(impl, batch: ModelBatch, device: str, seed: int = 0):
    model = build_model(impl, batch.cfg, device=device, dtype=F64).eval()
    return randomize_parameters_(model, seed)


def _tokens(array: np.ndarray, device: str) -> torch.Tensor:
    return torch.as_tensor(array, device=device)


@pytest.mark.own_evidence("mask.zero-weight", given=(*MODEL_GIVEN, "decoder.block"))
@pytest.mark.own_evidence("decoder.block", given=MODEL_GIVEN)
@pytest.mark.blackbox
@pytest.mark.clause("mask.zero-weight", "decoder.block")
@given(case=causal_perturbations())
def test_decoder_is_causal(impl, device: str, case: PerturbedBatch) -> None:
    """Changing every target token after position t (each to another id; t < Lt - 1, so at least one) changes no
    decoder output nor logit at positions <= t."""
    batch = case.batch
    note(case.describe())
    model = _model(impl, batch, device)
    Ls, Lt, t = batch.src.shape[1], batch.tgt.shape[1], batch.cut
    src, tgt, changed = _tokens(batch.src, device), _tokens(batch.tgt, device), _tokens(case.changed, device)
    src_mask, tgt_mask = key_padding(batch.src_lengths, Ls, device), causal(Lt, device)
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        out = model.decode(memory, src_mask, tgt, tgt_mask)
        out_changed = model.decode(memory, src_mask, changed, tgt_mask)
    cfg = {**case.describe(), "device": device}
    assert_close(out_changed[:, : t + 1], out[:, : t + 1], component="decode at positions <= t", config=cfg)
    assert_close(model.project(out_changed)[:, : t + 1], model.project(out)[:, : t + 1],
                 component="logits at positions <= t", config=cfg)


@pytest.mark.own_evidence("mask.zero-weight", given=(*MODEL_GIVEN, "encoder.block", "decoder.block"))
@pytest.mark.own_evidence("encoder.block", given=(*MODEL_GIVEN, "decoder.block"))
@pytest.mark.own_evidence("decoder.block", given=(*MODEL_GIVEN, "encoder.block"))
@pytest.mark.blackbox
@pytest.mark.clause("mask.zero-weight", "encoder.block", "decoder.block")
@given(case=padding_perturbations())
def test_encoder_and_decoder_ignore_padded_source_tokens(impl, device: str, case: PerturbedBatch) -> None:
    """Changing every source token at a padded position (each to another id; at least one sequence is padded)
    changes no encoder output at a real position, and no decoder output anywhere (cross-attention masks the padded
    keys)."""
    batch = case.batch
    note(case.describe())
    model = _model(impl, batch, device)
    Ls, Lt = batch.src.shape[1], batch.tgt.shape[1]
    src_mask = key_padding(batch.src_lengths, Ls, device)
    real = src_mask[:, 0, 0, :]  # (B, Ls)
    src, changed = _tokens(batch.src, device), _tokens(case.changed, device)
    tgt, tgt_mask = _tokens(batch.tgt, device), causal(Lt, device)
    with torch.no_grad():
        memory, memory_changed = model.encode(src, src_mask), model.encode(changed, src_mask)
        out = model.decode(memory, src_mask, tgt, tgt_mask)
        out_changed = model.decode(memory_changed, src_mask, tgt, tgt_mask)
    cfg = {**case.describe(), "device": device}
    assert_close(memory_changed, memory, component="encode at real positions", config=cfg, where=real[..., None])
    assert_close(out_changed, out, component="decode (cross-attention over padded source)", config=cfg)


def _attention(impl, cfg: AttentionConfig, dtype: torch.dtype, device: str, seed: int = 0):
    mha = construct(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, 0.0, device=device, dtype=dtype).eval()
    return randomize_parameters_(mha, seed)


def _inputs(cfg: AttentionConfig, seed: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded query [B, Lq, d] and memory [B, Lk, d]: the exact-identity properties hold whatever the values."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.B, cfg.Lq, cfg.d_model, generator=gen, dtype=dtype)
    memory = torch.randn(cfg.B, cfg.Lk, cfg.d_model, generator=gen, dtype=dtype)
    return x.to(device), memory.to(device)


@pytest.mark.own_evidence("mask.zero-weight", "mask.fully-masked-finite", given=("mha.static-attention",))
@pytest.mark.clause("mask.zero-weight", "mask.fully-masked-finite")
@given(inp=dense_attention_inputs(max_len=10, max_d_model=32, allow_fully_masked=True, require_masked_key=True),
       dtype=st.sampled_from((torch.float32, F64)))
def test_multi_head_attention_masked_keys_get_zero_weight(impl, device: str, inp: AttentionInputs,
                                                          dtype: torch.dtype) -> None:
    """``attention_scores`` is exactly 0 at masked keys; a row with a visible key sums to 1 (weights >= 0); a row
    with none, and the output, are finite. Inputs up to 1e3 and 1e4 + noise push the scores far past exp's range."""
    cfg = inp.cfg
    config = {**inp.describe(), "dtype": dtype}
    note(config)
    mha = _attention(impl, cfg, dtype, device)
    x = torch.as_tensor(inp.x, dtype=dtype, device=device)
    memory = x if inp.memory is None else torch.as_tensor(inp.memory, dtype=dtype, device=device)
    mask = None if inp.mask is None else torch.as_tensor(inp.mask, device=device)
    with torch.no_grad():
        out, weights = attention_results(mha, mha(x, memory, memory, mask), cfg, config=config)
    visible = torch.ones_like(weights, dtype=torch.bool) if mask is None else mask.expand_as(weights).bool()
    assert bool(torch.isfinite(weights).all()), "attention weights are not finite"
    assert bool(torch.isfinite(out).all()), "attention output is not finite"
    has_key = visible.any(dim=-1)  # (B, h, Lq)
    masked_weights = weights[~visible & has_key[..., None]]  # a fully masked row need only be finite
    assert bool((masked_weights == 0).all()), (
        f"masked keys got weight: max {float(masked_weights.abs().max()):.3e} over {masked_weights.numel()} "
        f"masked entries of rows with a visible key")
    assert bool((weights[has_key] >= 0).all()), f"negative attention weight {float(weights[has_key].min()):.3e}"
    sums = weights.sum(dim=-1)
    assert_close(sums[has_key], torch.ones_like(sums[has_key]), component="attention row sums (rows with a key)",
                 config=inp.describe(), dtype=dtype)


#: Input gains for the static attention in each dtype: scores reach about gain^2 * sqrt(d_k), in range for each.
GAINS = {torch.float64: (1.0, 30.0, 1e3), torch.float32: (1.0, 30.0, 1e3), torch.bfloat16: (1.0, 30.0, 1e3),
         torch.float16: (1.0, 8.0, 30.0)}


@pytest.mark.own_evidence("mask.zero-weight", "mask.fully-masked-finite", given=("mha.static-attention",))
@pytest.mark.clause("mask.zero-weight", "mask.fully-masked-finite", "numerics.16bit-semantics")
@pytest.mark.parametrize("dtype", tuple(GAINS), ids=str)
@given(inp=dense_attention_inputs(max_len=10, max_d_model=32, allow_fully_masked=True, scales=("unit",),
                                  require_masked_key=True),
       gain_index=st.integers(0, 2))
def test_attention_masked_keys_get_zero_weight_in_every_dtype(impl, device: str, dtype: torch.dtype,
                                                              inp: AttentionInputs, gain_index: int) -> None:
    """The static ``attention`` in float64, float32, bfloat16 and float16, scores up to thousands in either sign
    (within each dtype's range): masked keys get exactly 0, visible rows sum to 1 (dtype tolerance), fully masked
    rows and outputs are finite. The 16-bit cases judge ``numerics.16bit-semantics`` (clauses.toml ``[dtypes]``)."""
    gain = GAINS[dtype][gain_index]
    cfg = inp.cfg
    note({**inp.describe(), "dtype": dtype, "gain": gain})

    def heads(a):  # [B, L, d] -> [B, h, L, d_k]
        t = torch.as_tensor(a * gain, dtype=dtype, device=device)
        return t.view(t.shape[0], t.shape[1], cfg.h, cfg.d_k).transpose(1, 2)

    query = heads(inp.x)
    key = query if inp.memory is None else heads(inp.memory)
    value = key.flip(-1)
    mask = None if inp.mask is None else torch.as_tensor(inp.mask, device=device)
    out, weights = impl.MultiHeadAttentionBlock.attention(query, key, value, mask, None)
    visible = torch.ones_like(weights, dtype=torch.bool) if mask is None else mask.expand_as(weights).bool()
    assert bool(torch.isfinite(weights).all()), (
        f"non-finite weights in {int((~torch.isfinite(weights)).sum())} entries, fully masked rows: "
        f"{int((~visible.any(-1)).sum())}")
    assert bool(torch.isfinite(out).all()), "attention output is not finite"
    has_key = visible.any(dim=-1)
    assert bool((weights[~visible & has_key[..., None]] == 0).all()), "masked keys got nonzero weight"
    sums = weights.double().sum(dim=-1)  # each weight rounds by <= eps/2 relative: the sum by <= eps/2
    assert_close(sums[has_key], torch.ones_like(sums[has_key]), component="attention row sums (rows with a key)",
                 config={**inp.describe(), "gain": gain}, dtype=dtype)


@pytest.mark.own_evidence("mask.fully-masked-finite", given=("mha.static-attention",))
@pytest.mark.clause("mask.fully-masked-finite", "numerics.16bit-range")
@pytest.mark.parametrize("dtype", tuple(GAINS), ids=str)
@given(h=st.integers(1, 3), d_k=st.integers(1, 8), Lq=st.integers(1, 4), Lk=st.integers(1, 6),
       sign=st.sampled_from((-1.0, 1.0)), gain_index=st.integers(0, 2))
def test_attention_fully_masked_rows_finite_in_every_dtype(impl, device: str, dtype: torch.dtype, h: int, d_k: int,
                                                           Lq: int, Lk: int, sign: float, gain_index: int) -> None:
    """Every score of a row at +-gain^2 sqrt(d_k) (all far below, or far above, the others' range) with every key
    masked: weights exactly 0 there, output finite, and the fill value must not overflow to -inf (float16)."""
    gain = GAINS[dtype][gain_index]
    note(f"dtype={dtype}, h={h}, d_k={d_k}, Lq={Lq}, Lk={Lk}, score sign={sign}, gain={gain}")
    query = torch.full((1, h, Lq, d_k), gain, dtype=dtype, device=device)
    key = torch.full((1, h, Lk, d_k), sign * gain, dtype=dtype, device=device)
    value = torch.ones(1, h, Lk, d_k, dtype=dtype, device=device)
    mask = torch.zeros(1, 1, Lq, Lk, dtype=torch.bool, device=device)
    mask[..., 1:, :] = True  # row 0 fully masked, the others see every key
    out, weights = impl.MultiHeadAttentionBlock.attention(query, key, value, mask, None)
    def finite(out_weights: tuple[torch.Tensor, torch.Tensor]) -> str | None:
        return None if all(bool(torch.isfinite(t).all()) for t in out_weights) else "non-finite weights/output"
    with explained(dtype, lambda: diagnose_check(impl.MultiHeadAttentionBlock.attention,
                                                 (query, key, value, mask, None), dtype=dtype, check=finite)):
        assert bool(torch.isfinite(weights).all() and torch.isfinite(out).all()), (
            f"non-finite weights/output: weights row 0 = {weights[0, 0, 0].tolist()}, out row 0 = "
            f"{out[0, 0, 0].tolist()}")
    if Lq > 1:
        assert_close(weights[..., 1:, :].double().sum(-1), torch.ones(1, h, Lq - 1, dtype=F64),
                     component="row sums", config={"dtype": dtype, "gain": gain}, dtype=dtype)


@pytest.mark.strict("a fully masked query row gets all-zero weights, so a zero output")
@pytest.mark.clause("strict.fully-masked-zero")
@pytest.mark.parametrize("dtype", tuple(GAINS), ids=str)
@given(inp=dense_attention_inputs(max_len=10, max_d_model=32, allow_fully_masked=True,
                                  mask_kinds=("key_padding", "random", "blog_key", "blog_full", "blog_shared")))
def test_attention_fully_masked_rows_are_zero(impl, device: str, dtype: torch.dtype, inp: AttentionInputs) -> None:
    """This package's choice: a query row with no visible key gets all-zero weights in ``attention_scores`` (the
    block) and in the static ``attention``, and a zero output there, in every dtype."""
    cfg = inp.cfg
    config = {**inp.describe(), "dtype": dtype}
    note(config)
    mha = _attention(impl, cfg, dtype, device)
    x = torch.as_tensor(inp.x, dtype=dtype, device=device)
    memory = x if inp.memory is None else torch.as_tensor(inp.memory, dtype=dtype, device=device)
    mask = np.array(inp.mask, copy=True)
    mask[..., 0, :] = False  # at least one fully masked row (every row, for a key-padding shape)
    mask = torch.as_tensor(mask, device=device)
    with torch.no_grad():
        _, weights = attention_results(mha, mha(x, memory, memory, mask), cfg, config=config)
    empty = ~mask.expand_as(weights).bool().any(dim=-1)  # (B, h, Lq)
    assert bool((weights[empty] == 0).all()), (
        f"{int(empty.sum())} fully masked rows have weights up to {float(weights[empty].abs().max()):.3e}")
    heads = lambda t: t.view(cfg.B, t.shape[1], cfg.h, cfg.d_k).transpose(1, 2)  # noqa: E731
    out, static_weights = impl.MultiHeadAttentionBlock.attention(heads(x), heads(memory), heads(memory).flip(-1),
                                                                 mask, None)
    assert bool((static_weights[empty] == 0).all()) and bool((out[empty] == 0).all()), (
        "static attention: fully masked rows are not all-zero")


@pytest.mark.own_evidence
@pytest.mark.clause("mask.semantics")
@given(case=int_mask_twins(), seed=st.integers(0, 2**31 - 1))
def test_multi_head_attention_bool_and_int_masks_identical(impl, device: str, case, seed: int) -> None:
    """A bool mask and an integer mask holding arbitrary nonzero values where it is True give identical outputs
    and weights (torch.equal)."""
    cfg, kind, mask, twin = case
    note(f"{cfg}, kind={kind}, int dtype={twin.dtype}, seed={seed}")
    mha = _attention(impl, cfg, F64, device)
    x, memory = _inputs(cfg, seed, F64, device)
    with torch.no_grad():
        out_bool, weights_bool = attention_results(mha, mha(x, memory, memory, torch.as_tensor(mask, device=device)),
                                                   cfg, config={"mask": kind})
        out_int, weights_int = attention_results(mha, mha(x, memory, memory, torch.as_tensor(twin, device=device)),
                                                 cfg, config={"mask": kind, "int dtype": twin.dtype})
    # NaN where NaN counts as the same: a formula that overflows to NaN (a naive softmax) is its own clause's finding,
    # and gives the same NaN under either form of one mask
    assert guard.same(out_int, out_bool), f"{twin.dtype} mask gives another output than the bool mask ({kind})"
    assert guard.same(weights_int, weights_bool), f"{twin.dtype} mask gives other weights than the bool mask"


@pytest.mark.own_evidence
@pytest.mark.clause("mask.semantics")
@given(case=mask_forms(), seed=st.integers(0, 2**31 - 1))
def test_multi_head_attention_mask_broadcast_forms_identical(impl, device: str, case, seed: int) -> None:
    """One mask written in each accepted shape ([Lk], [Lq, Lk], [1, Lq, Lk], [B, 1, 1, Lk], [B, 1, Lq, Lk],
    [1, h, Lq, Lk], ...) gives the output and weights of its full [B, h, Lq, Lk] form, exactly."""
    cfg, pattern, forms = case
    note(f"{cfg}, pattern={pattern}, shapes={[f.shape for f in forms]}, seed={seed}")
    mha = _attention(impl, cfg, F64, device)
    x, memory = _inputs(cfg, seed, F64, device)
    results = []
    with torch.no_grad():
        for form in forms:
            out = mha(x, memory, memory, torch.as_tensor(form, device=device))
            results.append((tuple(form.shape), *attention_results(mha, out, cfg, config={"mask shape": form.shape})))
    full_shape, full_out, full_weights = results[-1]
    for shape, out, weights in results[:-1]:
        assert guard.same(out, full_out), f"mask of shape {shape} gives another output than its {full_shape} form"
        assert guard.same(weights, full_weights), f"mask of shape {shape} gives other weights than {full_shape}"


@pytest.mark.clause("extra.mask-helpers")
@given(size=st.integers(1, 64))
def test_causal_mask_matches_numpy_tril(impl, size: int) -> None:
    """``causal_mask(size)`` is exactly Bool[1, size, size] = ``np.tril(ones)``: position t sees keys <= t."""
    skip_unless_extras(impl, "causal_mask")
    mask = impl.causal_mask(size)
    expected = np.tril(np.ones((size, size), dtype=bool))[None]
    assert mask.dtype == torch.bool and tuple(mask.shape) == expected.shape, f"{mask.dtype} {tuple(mask.shape)}"
    got = mask.cpu().numpy()
    assert np.array_equal(got, expected), f"causal_mask({size}) differs from tril at {np.argwhere(got != expected)[:5]}"


@pytest.mark.clause("extra.mask-helpers")
@given(tokens=st.integers(1, 4).flatmap(lambda B: st.integers(1, 16).flatmap(
           lambda L: token_batches(B, L, 6))), pad_id=st.integers(0, 5))
def test_padding_mask_matches_comparison(impl, tokens: np.ndarray, pad_id: int) -> None:
    """``padding_mask(tokens, pad_id)`` is exactly Bool[B, 1, 1, L] = ``tokens != pad_id`` on the key axis."""
    skip_unless_extras(impl, "padding_mask")
    note(f"tokens={tokens.tolist()}, pad_id={pad_id}")
    mask = impl.padding_mask(torch.as_tensor(tokens), pad_id)
    expected = (tokens != pad_id)[:, None, None, :]
    assert mask.dtype == torch.bool and tuple(mask.shape) == expected.shape, f"{mask.dtype} {tuple(mask.shape)}"
    assert np.array_equal(mask.cpu().numpy(), expected), "padding_mask differs from tokens != pad_id"
