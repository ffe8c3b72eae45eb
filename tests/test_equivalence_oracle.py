"""Every contract component against the float64 NumPy oracle (``reference.oracles.numpy_ref``), forward, on each device.

Parameters are random non-default values; each module runs either in eval mode with dropout p > 0 built in (eval
must switch dropout off) or in train mode with p = 0. The oracle gets exactly what the module saw: the inputs after
the cast to the dtype under test and the module's own (rounded) parameters, read back as float64. Hyper-parameters
are the ones the test built the module with (``h`` from the drawn configuration, ``eps`` the contract's default
``CONTRACT_EPS``, as no norm here is built with another), never read back from the module.

Tolerance: the direct table ``VALUE_TOL`` of the dtype, at the input scales where a fixed table is justified for
the component (``ALL_SCALES``, ``PRE_NORM_SCALES``, ``LINEAR_SCALES`` below); inputs are dense (every element
drawn), as repeated values would hide a missing 1/sqrt(d_k) or a head mix-up. Query rows with no visible key are
left out of the value comparison (the contract only asks them to be finite, and they are asserted finite).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from torch import nn

from reference.judge import conditioning
from reference.oracles import numpy_ref as R
from reference.judge.compare import assert_close, check_output
from reference.judge.mistakes import naming
from reference.oracles import mistakes as M
from reference.spec import variants
from reference.spec.contract import build_model, construct, randomize_parameters_
from reference.kit.weights import CONTRACT_EPS, extract_weights, to_numpy
from tests.strategies import (
    SCALES,
    AttentionInputs,
    DropoutMode,
    ModelInputs,
    dense_attention_inputs,
    dropout_modes,
    feed_forward_widths,
    model_inputs,
    sequence_lengths,
)
from tests.support import DTYPES, decoder_block, encoder_block, kept_weights

#: Input scales at which the fixed ``VALUE_TOL`` table is a justified yardstick, per kind of component (both
#: dtypes). The table bounds error relative to the output element; a component qualifies at a scale when its
#: rounding error does not grow with the inputs' magnitude or conditioning there:
#: * positions and the norm: every scale (x + pe is one rounding; a corrected two-pass norm is eps-accurate even
#:   at a 1e4 offset: that is the point of the 'offset' scale);
#: * pre-norm residuals, blocks and stacks: every sublayer sees normalised inputs and the residual stream's
#:   rounding is relative to |x|, so 'large' qualifies; at 'offset' the stream's rounding eps * 1e4 is amplified
#:   by the next norm's 1 / std (~1.7e4 * eps: 4e-12 in float64, 2e-3 in float32), past the table;
#: * linear maps and attention: their error is relative to |W| |x| (cancellation) and the softmax's to the score
#:   magnitude, so only 'tiny' and 'unit'; a linear map at 'large' is the 'unit' case scaled. Decoder blocks and
#:   stacks too: cross-attention takes the memory raw (in a model it is the encoder's normalised output).
#: The other (dtype, scale) pairs are judged by the error-ratio rule against torch in test_equivalence_torch.py.
ALL_SCALES = SCALES
PRE_NORM_SCALES = ("tiny", "unit", "large")
LINEAR_SCALES = ("tiny", "unit")

seeds = st.integers(0, 2**16)


def _sequences(scales: tuple[str, ...]) -> st.SearchStrategy[AttentionInputs]:
    """Inputs x [B, L, d] (dense: every element drawn) at one of ``scales``, for the position-wise components."""
    return dense_attention_inputs(scales=scales, cross=False, mask_kinds=("none",))


# ------------------------------------------------------------------------------------------------ helpers
def _randomized(module: nn.Module, mode: DropoutMode, seed: int) -> nn.Module:
    """``module`` with random non-default parameters (from ``seed``), in ``mode``'s train or eval mode."""
    randomize_parameters_(module, seed)
    return module.train(mode.train)


def _build(factory, *args, device: str, dtype: torch.dtype, mode: DropoutMode, seed: int) -> nn.Module:
    return _randomized(construct(factory, *args, device=device, dtype=dtype), mode, seed)


def _tensor(a: np.ndarray | None, device: str, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    if a is None:
        return None
    t = torch.as_tensor(a, device=device)
    return t.to(dtype) if dtype is not None else t


def _rows_with_a_key(mask: np.ndarray | None, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Bool [B, h, Lq, 1]: the query rows that see at least one key under ``mask`` (all rows when None)."""
    if mask is None:
        return np.ones(shape[:3] + (1,), dtype=bool)
    return np.broadcast_to(np.asarray(mask) != 0, shape).any(axis=-1, keepdims=True)


def _all_heads(rows: np.ndarray) -> np.ndarray:
    """[B, h, Lq, 1] -> [B, Lq, 1]: a token row is compared only if every head had a visible key."""
    return rows.all(axis=1)


def _assert_masked_keys_zero(weights: torch.Tensor, mask: np.ndarray | None, rows: np.ndarray) -> None:
    """Masked keys weigh exactly 0 in every row that has a visible key (fully masked rows need only be finite)."""
    __tracebackhide__ = True
    if mask is None:
        return
    w = to_numpy(weights)
    masked = ~np.broadcast_to(np.asarray(mask) != 0, w.shape) & rows
    assert (w[masked] == 0).all(), (f"masked keys must get exactly zero weight: {int((w[masked] != 0).sum())} "
                                    f"nonzero, largest {np.abs(w[masked]).max():.3e}")


def _check(actual: torch.Tensor, oracle: Callable[[], np.ndarray], *, component: str, config: dict,
           dtype: torch.dtype, where: np.ndarray | None = None,
           mistakes: dict[str, Callable[[], np.ndarray]] | None = None) -> None:
    """``value_tol(dtype)``, widened per element to the conditioning bound in float32/float64: ``oracle`` reads its
    inputs and weights through ``to_numpy``/``extract_weights`` when called, so its sensitivity to one rounding of
    them can be measured (``reference.judge.conditioning``). ``mistakes``: known-wrong formulas on the same inputs
    (``reference.oracles.mistakes``); a failure that matches one says so (``reference.judge.mistakes``)."""
    __tracebackhide__ = True
    expected = oracle()
    check_output(actual, expected.shape, component=component, config=config)
    sensitivity = None
    if dtype in (torch.float32, torch.float64):
        sensitivity = lambda: conditioning.sensitivity(oracle, conditioning.unit_roundoff(dtype))  # noqa: E731
    with naming(actual, mistakes, dtype=dtype, where=where):
        assert torch.isfinite(actual).all(), f"{component}: non-finite output {config}"
        assert_close(actual, expected, component=component, config=config, dtype=dtype, where=where,
                     sensitivity=sensitivity)


def _sequence(case: AttentionInputs, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray]:
    x = _tensor(case.x, device, dtype)
    return x, to_numpy(x)


# ------------------------------------------------------------------------------------------------ embeddings
@pytest.mark.clause("embed.scaled-lookup", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(vocab=st.integers(1, 50), d_model=st.integers(1, 128), B=st.integers(1, 3), L=sequence_lengths(64),
       mode=dropout_modes(), seed=seeds, data_seed=seeds)
def test_input_embeddings_matches_oracle(impl, device, dtype, vocab, d_model, B, L, mode, seed, data_seed) -> None:
    config = dict(vocab=vocab, d_model=d_model, B=B, L=L, mode=mode)
    note(config)
    emb = _build(impl.InputEmbeddings, d_model, vocab, device=device, dtype=dtype, mode=mode, seed=seed)
    tokens = np.random.default_rng(data_seed).integers(0, vocab, (B, L))
    out = emb(_tensor(tokens, device))
    _check(out, lambda: R.embedding(tokens, extract_weights(emb)["embedding.weight"]), component="InputEmbeddings",
           config=config, dtype=dtype, mistakes={name: (lambda f=f: f(tokens, extract_weights(emb)["embedding.weight"]))
                                                 for name, f in M.EMBEDDING.items()})


@pytest.mark.clause("pe.add", "pe.formula", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=_sequences(ALL_SCALES), extra=st.integers(0, 8), mode=dropout_modes())
def test_positional_encoding_matches_oracle(impl, device, dtype, case: AttentionInputs, extra: int,
                                            mode: DropoutMode) -> None:
    config = {**case.describe(), "seq_len": case.cfg.Lq + extra, "mode": mode}
    note(config)
    pe = construct(impl.PositionalEncoding, case.cfg.d_model, case.cfg.Lq + extra, mode.p, device=device,
                   dtype=dtype).train(mode.train)
    x, _ = _sequence(case, device, dtype)
    L, d = case.cfg.Lq, case.cfg.d_model
    _check(pe(x), lambda: R.positional_encoding(to_numpy(x)), component="PositionalEncoding", config=config,
           dtype=dtype, mistakes={name: (lambda f=f: to_numpy(x) + f(L, d)) for name, f in M.PE_TABLE.items()})


# ------------------------------------------------------------------------------------------------ norm, FFN
@pytest.mark.clause("ln.biased-variance", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=_sequences(ALL_SCALES), seed=seeds)
def test_layer_normalization_matches_oracle(impl, device, dtype, case: AttentionInputs, seed: int) -> None:
    config = case.describe()
    note(config)
    norm = _build(impl.LayerNormalization, case.cfg.d_model, device=device, dtype=dtype, mode=DropoutMode(False, 0),
                  seed=seed)
    x, _ = _sequence(case, device, dtype)

    def oracle() -> np.ndarray:
        w = extract_weights(norm)
        return R.layer_norm(to_numpy(x), w["alpha"], w["bias"], CONTRACT_EPS)

    def wrong(f: Callable[..., np.ndarray]) -> Callable[[], np.ndarray]:
        return lambda: f(to_numpy(x), extract_weights(norm)["alpha"], extract_weights(norm)["bias"], CONTRACT_EPS)

    _check(norm(x), oracle, component="LayerNormalization", config=config, dtype=dtype,
           mistakes={name: wrong(f) for name, f in M.LAYER_NORM.items()})


@pytest.mark.clause("ffn.formula", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=_sequences(LINEAR_SCALES), d_ff=feed_forward_widths(256), mode=dropout_modes(), seed=seeds)
def test_feed_forward_block_matches_oracle(impl, device, dtype, case: AttentionInputs, d_ff: int,
                                           mode: DropoutMode, seed: int) -> None:
    config = {**case.describe(), "d_ff": d_ff, "mode": mode}
    note(config)
    ff = _build(impl.FeedForwardBlock, case.cfg.d_model, d_ff, mode.p, device=device, dtype=dtype, mode=mode,
                seed=seed)
    x, _ = _sequence(case, device, dtype)
    _check(ff(x), lambda: R.feed_forward(to_numpy(x), extract_weights(ff)), component="FeedForwardBlock",
           config=config, dtype=dtype,
           mistakes={name: (lambda f=f: f(to_numpy(x), extract_weights(ff))) for name, f in M.FEED_FORWARD.items()})


# ------------------------------------------------------------------------------------------------ attention
@pytest.mark.clause("mha.formula", "mha.static-attention", "mask.semantics", "mask.zero-weight", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(scales=LINEAR_SCALES), mode=dropout_modes(), seed=seeds)
def test_multi_head_attention_block_matches_oracle(impl, device, dtype, case: AttentionInputs, mode: DropoutMode,
                                                   seed: int) -> None:
    """Self- and cross-attention under every mask kind; output and the kept ``attention_scores``."""
    config = {**case.describe(), "mode": mode}
    note(config)
    cfg = case.cfg
    mha = _build(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, mode.p, device=device, dtype=dtype, mode=mode,
                 seed=seed)
    q, _ = _sequence(case, device, dtype)
    kv = q if case.memory is None else _tensor(case.memory, device, dtype)
    mask = _tensor(case.mask, device)
    out = mha(q, kv, kv, mask)

    def oracle() -> tuple[np.ndarray, np.ndarray]:
        return R.multi_head_attention(to_numpy(q), to_numpy(kv), to_numpy(kv), case.mask, extract_weights(mha),
                                      cfg.h)

    rows = _rows_with_a_key(case.mask, (cfg.B, cfg.h, cfg.Lq, cfg.Lk))
    wrong = {name: (lambda f=f: f(to_numpy(q), to_numpy(kv), to_numpy(kv), case.mask, extract_weights(mha), cfg.h))
             for name, f in M.MULTI_HEAD.items()}
    _check(out, lambda: oracle()[0], component="MultiHeadAttentionBlock", config=config, dtype=dtype,
           mistakes={name: (lambda f=f: f()[0]) for name, f in wrong.items()},
           where=_all_heads(rows))
    scores = kept_weights(mha, (cfg.B, cfg.h, cfg.Lq, cfg.Lk), config=config)
    assert torch.isfinite(scores).all()
    _check(scores, lambda: oracle()[1], component="MultiHeadAttentionBlock.attention_scores", config=config,
           dtype=dtype, where=rows, mistakes={name: (lambda f=f: f()[1]) for name, f in wrong.items()})
    _assert_masked_keys_zero(scores, case.mask, rows)


@pytest.mark.clause("mha.static-attention", "mask.zero-weight", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(scales=LINEAR_SCALES), seed=seeds)
def test_attention_static_matches_oracle(impl, device, dtype, case: AttentionInputs, seed: int) -> None:
    """``MultiHeadAttentionBlock.attention(q, k, v, mask, None)`` on per-head inputs [B, h, L, d_k]."""
    config = case.describe()
    note(config)
    cfg = case.cfg
    rng = np.random.default_rng(seed)

    def heads(a: np.ndarray) -> torch.Tensor:  # reuse the drawn [B, L, d] values as [B, h, L, d_k]
        return _tensor(np.ascontiguousarray(R.split_heads(a, cfg.h)), device, dtype)

    q = heads(case.x)
    k = heads(case.x if case.memory is None else case.memory)
    v = heads(rng.permutation(case.x if case.memory is None else case.memory, axis=1))
    out, weights = impl.MultiHeadAttentionBlock.attention(q, k, v, _tensor(case.mask, device), None)
    def oracle() -> tuple[np.ndarray, np.ndarray]:
        return R.scaled_dot_product_attention(to_numpy(q), to_numpy(k), to_numpy(v), case.mask)

    rows = _rows_with_a_key(case.mask, (cfg.B, cfg.h, cfg.Lq, cfg.Lk))
    wrong = {name: (lambda f=f: f(to_numpy(q), to_numpy(k), to_numpy(v), case.mask)) for name, f in M.ATTENTION.items()}
    _check(out, lambda: oracle()[0], component="attention", config=config, dtype=dtype, where=rows,
           mistakes={name: (lambda f=f: f()[0]) for name, f in wrong.items()})
    _check(weights, lambda: oracle()[1], component="attention weights", config=config, dtype=dtype, where=rows,
           mistakes={name: (lambda f=f: f()[1]) for name, f in wrong.items()})
    _assert_masked_keys_zero(weights, case.mask, rows)


# ------------------------------------------------------------------------------------------------ residual, blocks
@pytest.mark.clause(*variants.RESIDUAL_CLAUSES.values(), "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=_sequences(PRE_NORM_SCALES), d_ff=feed_forward_widths(128), mode=dropout_modes(), seed=seeds)
def test_residual_connection_matches_oracle(impl, device, dtype, case: AttentionInputs, d_ff: int,
                                            mode: DropoutMode, seed: int) -> None:
    """``x + dropout(FFN(norm(x)))`` with a FeedForwardBlock as the sublayer (``norm(x + dropout(FFN(x)))`` under
    ``--variant post-norm``: the oracle follows the run's variant, and the run counts the test for its clause only)."""
    config = {**case.describe(), "d_ff": d_ff, "mode": mode}
    note(config)
    d = case.cfg.d_model
    res = _build(impl.ResidualConnection, d, mode.p, device=device, dtype=dtype, mode=mode, seed=seed)
    ff = _build(impl.FeedForwardBlock, d, d_ff, mode.p, device=device, dtype=dtype, mode=mode, seed=seed + 1)
    x, _ = _sequence(case, device, dtype)

    def oracle() -> np.ndarray:
        w_ff = extract_weights(ff)
        return R.residual(to_numpy(x), lambda y: R.feed_forward(y, w_ff), extract_weights(res), CONTRACT_EPS)

    def wrong(f: Callable[..., np.ndarray]) -> Callable[[], np.ndarray]:
        w_ff = extract_weights(ff)
        return lambda: f(to_numpy(x), lambda y: R.feed_forward(y, w_ff), extract_weights(res), CONTRACT_EPS)

    _check(res(x, ff), oracle, component="ResidualConnection", config=config, dtype=dtype,
           mistakes={name: wrong(f) for name, f in M.RESIDUAL.items()})


def _encoder_block(impl, d: int, h: int, d_ff: int, *, device, dtype, mode: DropoutMode, seed: int) -> nn.Module:
    return _randomized(encoder_block(impl, d, h, d_ff, mode.p, device, dtype), mode, seed)


def _decoder_block(impl, d: int, h: int, d_ff: int, *, device, dtype, mode: DropoutMode, seed: int) -> nn.Module:
    return _randomized(decoder_block(impl, d, h, d_ff, mode.p, device, dtype), mode, seed)


@pytest.mark.clause("encoder.block", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(scales=PRE_NORM_SCALES, cross=False, max_d_model=64, max_len=32),
       d_ff=feed_forward_widths(128), mode=dropout_modes(), seed=seeds)
def test_encoder_block_matches_oracle(impl, device, dtype, case: AttentionInputs, d_ff: int, mode: DropoutMode,
                                      seed: int) -> None:
    config = {**case.describe(), "d_ff": d_ff, "mode": mode}
    note(config)
    cfg = case.cfg
    block = _encoder_block(impl, cfg.d_model, cfg.h, d_ff, device=device, dtype=dtype, mode=mode, seed=seed)
    x, _ = _sequence(case, device, dtype)
    rows = _all_heads(_rows_with_a_key(case.mask, (cfg.B, cfg.h, cfg.Lq, cfg.Lk)))
    _check(block(x, _tensor(case.mask, device)),
           lambda: R.encoder_block(to_numpy(x), case.mask, extract_weights(block), cfg.h, CONTRACT_EPS),
           component="EncoderBlock", config=config, dtype=dtype, where=rows)


@pytest.mark.clause("decoder.block", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(scales=LINEAR_SCALES, decoder=True, max_d_model=64, max_len=32),
       d_ff=feed_forward_widths(128), mode=dropout_modes(), seed=seeds)
def test_decoder_block_matches_oracle(impl, device, dtype, case: AttentionInputs, d_ff: int, mode: DropoutMode,
                                      seed: int) -> None:
    """Self-attention under ``tgt_mask`` (case.self_mask), cross-attention under ``src_mask`` (case.mask)."""
    config = {**case.describe(), "d_ff": d_ff, "mode": mode}
    note(config)
    cfg = case.cfg
    block = _decoder_block(impl, cfg.d_model, cfg.h, d_ff, device=device, dtype=dtype, mode=mode, seed=seed)
    x, _ = _sequence(case, device, dtype)
    memory = _tensor(case.memory, device, dtype)

    def expected() -> np.ndarray:
        return R.decoder_block(to_numpy(x), to_numpy(memory), case.mask, case.self_mask, extract_weights(block),
                               cfg.h, CONTRACT_EPS)

    rows = (_all_heads(_rows_with_a_key(case.mask, (cfg.B, cfg.h, cfg.Lq, cfg.Lk)))
            & _all_heads(_rows_with_a_key(case.self_mask, (cfg.B, cfg.h, cfg.Lq, cfg.Lq))))
    out = block(x, memory, _tensor(case.mask, device), _tensor(case.self_mask, device))
    _check(out, expected, component="DecoderBlock", config=config, dtype=dtype, where=rows)


# ------------------------------------------------------------------------------------------------ stacks
#: Stack inputs: no fully masked rows (their values would feed later layers), lengths <= 16 for speed.
STACKS = {"max_d_model": 64, "max_len": 16, "allow_fully_masked": False}


@pytest.mark.clause("encoder.stack", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(scales=PRE_NORM_SCALES, cross=False, **STACKS), N=st.integers(1, 3),
       d_ff=feed_forward_widths(64), mode=dropout_modes(), seed=seeds)
def test_encoder_matches_oracle(impl, device, dtype, case: AttentionInputs, N: int, d_ff: int, mode: DropoutMode,
                                seed: int) -> None:
    """N encoder blocks then the final norm (no fully masked rows: their values would feed later layers)."""
    config = {**case.describe(), "N": N, "d_ff": d_ff, "mode": mode}
    note(config)
    cfg, kw = case.cfg, dict(device=device, dtype=dtype)
    layers = nn.ModuleList([_encoder_block(impl, cfg.d_model, cfg.h, d_ff, mode=mode, seed=seed, **kw)
                            for _ in range(N)])
    enc = _build(impl.Encoder, cfg.d_model, layers, mode=mode, seed=seed, **kw)
    x, _ = _sequence(case, device, dtype)
    _check(enc(x, _tensor(case.mask, device)),
           lambda: R.encoder(to_numpy(x), case.mask, extract_weights(enc), cfg.h, CONTRACT_EPS),
           component="Encoder", config=config, dtype=dtype)


@pytest.mark.clause("decoder.stack", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(scales=LINEAR_SCALES, decoder=True, **STACKS), N=st.integers(1, 3),
       d_ff=feed_forward_widths(64), mode=dropout_modes(), seed=seeds)
def test_decoder_matches_oracle(impl, device, dtype, case: AttentionInputs, N: int, d_ff: int, mode: DropoutMode,
                                seed: int) -> None:
    config = {**case.describe(), "N": N, "d_ff": d_ff, "mode": mode}
    note(config)
    cfg, kw = case.cfg, dict(device=device, dtype=dtype)
    layers = nn.ModuleList([_decoder_block(impl, cfg.d_model, cfg.h, d_ff, mode=mode, seed=seed, **kw)
                            for _ in range(N)])
    dec = _build(impl.Decoder, cfg.d_model, layers, mode=mode, seed=seed, **kw)
    x, _ = _sequence(case, device, dtype)
    memory = _tensor(case.memory, device, dtype)

    def expected() -> np.ndarray:
        return R.decoder(to_numpy(x), to_numpy(memory), case.mask, case.self_mask, extract_weights(dec), cfg.h,
                         CONTRACT_EPS)

    out = dec(x, memory, _tensor(case.mask, device), _tensor(case.self_mask, device))
    _check(out, expected, component="Decoder", config=config, dtype=dtype)


@pytest.mark.clause("projection.logits", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=_sequences(LINEAR_SCALES), vocab=st.integers(1, 64), seed=seeds)
def test_projection_layer_matches_oracle(impl, device, dtype, case: AttentionInputs, vocab: int, seed: int) -> None:
    config = {**case.describe(), "vocab": vocab}
    note(config)
    proj = _build(impl.ProjectionLayer, case.cfg.d_model, vocab, device=device, dtype=dtype,
                  mode=DropoutMode(False, 0.0), seed=seed)
    x, _ = _sequence(case, device, dtype)
    _check(proj(x), lambda: R.projection(to_numpy(x), extract_weights(proj)), component="ProjectionLayer",
           config=config, dtype=dtype,
           mistakes={name: (lambda f=f: f(to_numpy(x), extract_weights(proj))) for name, f in M.PROJECTION.items()})


# ------------------------------------------------------------------------------------------------ full model
@pytest.mark.clause("transformer.compose", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=model_inputs(max_d_model=64, max_N=3, max_len=16), mode=dropout_modes(), seed=seeds)
def test_transformer_matches_oracle(impl, device, dtype, case: ModelInputs, mode: DropoutMode, seed: int) -> None:
    """encode, decode and project of a built model against ``numpy_ref.encode/decode/project``."""
    config = {**case.describe(), "mode": mode}
    note(config)
    cfg = dataclasses.replace(case.cfg, dropout=mode.p)
    model = randomize_parameters_(build_model(impl, cfg, device=device, dtype=dtype), seed).train(mode.train)
    hp = {"h": cfg.h, "eps": CONTRACT_EPS}  # what build_transformer was called with; its norms take the default
    src, tgt = _tensor(case.src, device), _tensor(case.tgt, device)
    src_mask, tgt_mask = _tensor(case.src_mask, device), _tensor(case.tgt_mask, device)
    memory = model.encode(src, src_mask)
    _check(memory, lambda: R.encode(case.src, case.src_mask, extract_weights(model), **hp),
           component="Transformer.encode", config=config, dtype=dtype)
    decoded = model.decode(memory, src_mask, tgt, tgt_mask)
    _check(decoded, lambda: R.decode(to_numpy(memory), case.src_mask, case.tgt, case.tgt_mask, extract_weights(model),
                                     **hp), component="Transformer.decode", config=config, dtype=dtype)
    _check(model.project(decoded), lambda: R.project(to_numpy(decoded), extract_weights(model)),
           component="Transformer.project", config=config, dtype=dtype)
