"""Train mode judged exactly (issue 34): each component called in train mode with dropout p > 0 under
``reference.kit.replay.DropoutRecorder`` (every dropout it draws is drawn there, from a seeded generator, and kept
in call order), against the float64 oracle that applies the same masks at the contract's sites
(``reference.oracles.replay``: after the positional encoding, on the attention weights, on the FFN's hidden
activation, on each residual branch). A dropout missing, extra, at another rate or on a tensor of another shape is a
``DropoutSiteError`` naming the site; one moved where the shapes agree changes the output and fails the comparison.

Against torch, with gradients: the implementation's masks are replayed (``reference.kit.replay.DropoutReplayer``)
into ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``/``DecoderLayer`` and ``nn.Transformer`` (their dropouts
set to p), whose sites coincide with the contract's: the attention weights, each residual branch (``dropout1..3``),
the FFN's hidden. ``nn.Transformer`` has no positional encoding: the contract's dropout after it is added to the
torch side by the test. Outputs and every gradient (inputs, parameters) are compared like eval mode's
(``tests/test_gradients.py``'s ``compare_gradients``: float64, ``GRAD_TOL`` widened to the conditioning bound).

Float64 throughout; tolerance: the float64 value table widened to the oracle's conditioning bound, as every oracle
comparison (``tests/test_equivalence_oracle.py``'s ``_check``). The implementation's own dropout semantics (fraction,
scaling, eval identity) are ``dropout.semantics``'s (tests/test_dropout_state.py): here the recorder draws them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from reference.kit.replay import DropoutRecorder, DropoutReplayer
from reference.kit.weights import extract_weights, to_numpy
from reference.oracles import replay as RP
from reference.oracles import torch_adapters as ta
from reference.spec import variants
from reference.spec.contract import build_model, construct, randomize_parameters_
from tests.strategies import AttentionInputs, ModelInputs, dense_attention_inputs, feed_forward_widths, model_inputs
from tests.support import as_tensor, assert_float64_close, decoder_block, encoder_block, mha_block, noted
from tests.test_equivalence_oracle import _check
from tests.test_gradients import Case, compare_gradients, run_decoder, run_encoder, run_self_or_cross, tensors

F64 = torch.float64
rates = st.sampled_from((0.1, 0.5))
seeds = st.integers(0, 2**16)


def _module(factory, *args, seed: int, device: str) -> torch.nn.Module:
    module = construct(factory, *args, device=device, dtype=F64)
    return randomize_parameters_(module, seed).train()


def _recorded(seed: int, call):
    """(the call's output, the dropouts it drew), the dropouts drawn by ``DropoutRecorder``."""
    with DropoutRecorder(seed) as recorder, torch.no_grad():
        out = call()
    return out, recorder.drawn


def _judge(out: torch.Tensor, oracle, *, component: str, config: dict, drop: RP.Replay) -> None:
    """The dropout sites first (a missing, extra or misplaced dropout named), then the values."""
    __tracebackhide__ = True
    oracle()
    drop.done()
    _check(out, oracle, component=component, config=config, dtype=F64)


def _x(case: AttentionInputs, device: str) -> torch.Tensor:
    return torch.as_tensor(case.x, dtype=F64, device=device)


@pytest.mark.clause("pe.add")
@pytest.mark.own_evidence(given=("pe.formula", "pe.buffer"))
@given(case=dense_attention_inputs(cross=False, mask_kinds=("none",), scales=("unit",), max_len=16), p=rates,
       seed=seeds)
def test_positional_encoding_train_mode_replays_its_dropout(impl, device, case: AttentionInputs, p: float,
                                                            seed: int) -> None:
    """``dropout(x + pe[:L])``: one dropout, on [B, L, d]."""
    config = noted(case, p=p, mode="train")
    pe = construct(impl.PositionalEncoding, case.cfg.d_model, case.cfg.Lq, p, device=device, dtype=F64).train()
    x = _x(case, device)
    out, drawn = _recorded(seed, lambda: pe(x))
    drop = RP.Replay(drawn, p, "PositionalEncoding")
    _judge(out, lambda: RP.positional_encoding(to_numpy(x), drop.restart()), component="PositionalEncoding (train mode)",
           config=config, drop=drop)


@pytest.mark.clause("ffn.formula")
@pytest.mark.own_evidence
@given(case=dense_attention_inputs(cross=False, mask_kinds=("none",), scales=("unit",), max_len=16),
       d_ff=feed_forward_widths(64), p=rates, seed=seeds)
def test_feed_forward_train_mode_replays_its_dropout(impl, device, case: AttentionInputs, d_ff: int, p: float,
                                                     seed: int) -> None:
    """``linear_2(dropout(relu(linear_1(x))))``: one dropout, on the hidden [B, L, d_ff]."""
    config = noted(case, d_ff=d_ff, p=p, mode="train")
    ff = _module(impl.FeedForwardBlock, case.cfg.d_model, d_ff, p, seed=seed, device=device)
    x = _x(case, device)
    out, drawn = _recorded(seed, lambda: ff(x))
    drop = RP.Replay(drawn, p, "FeedForwardBlock")
    _judge(out, lambda: RP.feed_forward(to_numpy(x), extract_weights(ff), drop.restart()), component="FeedForwardBlock (train mode)", config=config, drop=drop)


@pytest.mark.clause("mha.formula")
@pytest.mark.own_evidence
@given(case=dense_attention_inputs(mask_kinds=("none",), scales=("unit",), max_len=12, max_d_model=64), p=rates,
       seed=seeds)
def test_multi_head_attention_train_mode_replays_its_dropout(impl, device, case: AttentionInputs, p: float,
                                                             seed: int) -> None:
    """One dropout, on the attention weights [B, h, Lq, Lk], before they average the values (no mask: the masking
    clauses are judged apart)."""
    config = noted(case, p=p, mode="train")
    cfg = case.cfg
    mha = _module(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, p, seed=seed, device=device)
    q = _x(case, device)
    kv = q if case.memory is None else torch.as_tensor(case.memory, dtype=F64, device=device)
    out, drawn = _recorded(seed, lambda: mha(q, kv, kv, None))
    out = out[0] if isinstance(out, tuple) else out
    drop = RP.Replay(drawn, p, "MultiHeadAttentionBlock")
    _judge(out, lambda: RP.multi_head_attention(to_numpy(q), to_numpy(kv), to_numpy(kv), None, extract_weights(mha),
                                                cfg.h, drop.restart()),
           component="MultiHeadAttentionBlock (train mode)", config=config, drop=drop)


@pytest.mark.clause(*variants.RESIDUAL_CLAUSES.values())
@pytest.mark.own_evidence(given=("ln.biased-variance", "ln.per-feature-affine"))
@given(case=dense_attention_inputs(cross=False, mask_kinds=("none",), scales=("unit",), max_len=16), p=rates,
       seed=seeds)
def test_residual_train_mode_replays_its_dropout(impl, device, case: AttentionInputs, p: float, seed: int) -> None:
    """``x + dropout(sublayer(norm(x)))`` (post-norm: ``norm(x + dropout(sublayer(x)))``) with a sublayer that draws no
    dropout of its own (``tanh(x A)``, A fixed): one dropout, on the branch [B, L, d]."""
    config = noted(case, p=p, mode="train", variant=variants.variant())
    d = case.cfg.d_model
    res = _module(impl.ResidualConnection, d, p, seed=seed, device=device)
    a = np.random.default_rng(seed).standard_normal((d, d)) / np.sqrt(d)
    a_t = torch.as_tensor(a, dtype=F64, device=device)
    x = _x(case, device)
    out, drawn = _recorded(seed, lambda: res(x, lambda y: torch.tanh(y @ a_t)))
    drop = RP.Replay(drawn, p, "ResidualConnection")
    _judge(out, lambda: RP.residual(to_numpy(x), lambda y: np.tanh(y @ a), extract_weights(res), drop.restart()),
           component="ResidualConnection (train mode)", config=config, drop=drop)


@pytest.mark.clause("encoder.block")
@given(case=dense_attention_inputs(cross=False, mask_kinds=("none", "key_padding"), scales=("unit",), max_len=10,
                                   max_d_model=48, allow_fully_masked=False),
       d_ff=feed_forward_widths(48), p=rates, seed=seeds)
def test_encoder_block_train_mode_replays_its_dropouts(impl, device, case: AttentionInputs, d_ff: int, p: float,
                                                       seed: int) -> None:
    """Four dropouts in the contract's order: self-attention weights, its residual branch, the FFN's hidden, its
    residual branch."""
    config = noted(case, d_ff=d_ff, p=p, mode="train")
    cfg = case.cfg
    block = randomize_parameters_(encoder_block(impl, cfg.d_model, cfg.h, d_ff, p, device=device, dtype=F64),
                                  seed).train()
    x = _x(case, device)
    mask = None if case.mask is None else torch.as_tensor(case.mask, device=device)
    out, drawn = _recorded(seed, lambda: block(x, mask))
    drop = RP.Replay(drawn, p, "EncoderBlock")
    _judge(out, lambda: RP.encoder_block(to_numpy(x), case.mask, extract_weights(block), cfg.h, drop.restart()),
           component="EncoderBlock (train mode)", config=config, drop=drop)


@pytest.mark.clause("decoder.block")
@given(case=dense_attention_inputs(decoder=True, mask_kinds=("none", "causal", "key_padding"), scales=("unit",),
                                   max_len=10, max_d_model=48, allow_fully_masked=False),
       d_ff=feed_forward_widths(48), p=rates, seed=seeds)
def test_decoder_block_train_mode_replays_its_dropouts(impl, device, case: AttentionInputs, d_ff: int, p: float,
                                                       seed: int) -> None:
    """Six dropouts in the contract's order: self-attention weights and branch, cross-attention weights and branch,
    the FFN's hidden and branch."""
    config = noted(case, d_ff=d_ff, p=p, mode="train")
    cfg = case.cfg
    block = randomize_parameters_(decoder_block(impl, cfg.d_model, cfg.h, d_ff, p, device=device, dtype=F64),
                                  seed).train()
    x = _x(case, device)
    memory = torch.as_tensor(case.memory, dtype=F64, device=device)
    src_mask = None if case.mask is None else torch.as_tensor(case.mask, device=device)
    tgt_mask = None if case.self_mask is None else torch.as_tensor(case.self_mask, device=device)
    out, drawn = _recorded(seed, lambda: block(x, memory, src_mask, tgt_mask))
    drop = RP.Replay(drawn, p, "DecoderBlock")
    _judge(out, lambda: RP.decoder_block(to_numpy(x), to_numpy(memory), case.mask, case.self_mask,
                                         extract_weights(block), cfg.h, drop.restart()),
           component="DecoderBlock (train mode)", config=config, drop=drop)


# ------------------------------------------------------------------------------------ against torch, with gradients
def _replayed(run, drawn, component: str):
    """``run`` with every dropout taking the recorded masks, in order (a fresh replay per call)."""
    def call(module: nn.Module, **inputs: torch.Tensor) -> torch.Tensor:
        with DropoutReplayer(drawn, component):
            return run(module, **inputs)
    return call


def _against_torch(module: nn.Module, twin: nn.Module, case: Case, *, p: float, seed: int, device: str,
                   component: str, label: str, config: dict) -> None:
    """Record the implementation's dropouts once, replay them into both (torch's dropouts at p): the outputs, then
    every gradient, compared as in eval mode."""
    __tracebackhide__ = True
    arrays, impl_run, torch_run = case
    inputs = tensors(arrays, device, F64)
    module.train(), ta.set_dropout(twin, p).train()
    with DropoutRecorder(seed) as recorder, torch.no_grad():
        impl_run(module, **inputs)
    ours, theirs = _replayed(impl_run, recorder.drawn, component), _replayed(torch_run, recorder.drawn, label)
    with torch.no_grad():
        out, expected = ours(module, **inputs), theirs(twin, **inputs)
    assert_float64_close(out, expected, component=f"{component} (train mode) vs {label}", config=config)
    compare_gradients(module, twin, ours, theirs, inputs, dtype=F64, component=f"{component} (train mode)",
                      config=config, label=label, seed=seed)


TORCH_CASES = {"max_len": 10, "max_d_model": 32, "allow_fully_masked": False, "scales": ("unit",)}


@pytest.mark.clause("mha.formula")
@given(case=dense_attention_inputs(mask_kinds=("none", "causal", "key_padding"), **TORCH_CASES), p=rates, seed=seeds)
def test_multi_head_attention_train_mode_matches_torch_replayed(impl, device, case: AttentionInputs, p: float,
                                                                seed: int) -> None:
    """nn.MultiheadAttention with the implementation's attention-weight dropout replayed: outputs and gradients."""
    config = noted(case, p=p, mode="train")
    block = randomize_parameters_(mha_block(impl, case.cfg.d_model, case.cfg.h, p, device, F64), seed)
    _against_torch(block, ta.to_multihead_attention(block, h=case.cfg.h), run_self_or_cross(case), p=p, seed=seed,
                   device=device, component="MultiHeadAttentionBlock", label="nn.MultiheadAttention", config=config)


@pytest.mark.clause("encoder.block")
@given(case=dense_attention_inputs(cross=False, mask_kinds=("none", "key_padding"), **TORCH_CASES),
       d_ff=feed_forward_widths(32), p=rates, seed=seeds)
def test_encoder_block_train_mode_matches_torch_replayed(impl, device, case: AttentionInputs, d_ff: int, p: float,
                                                         seed: int) -> None:
    """nn.TransformerEncoderLayer with the implementation's four dropouts replayed: outputs and gradients."""
    config = noted(case, d_ff=d_ff, p=p, mode="train")
    cfg = case.cfg
    block = randomize_parameters_(encoder_block(impl, cfg.d_model, cfg.h, d_ff, p, device=device, dtype=F64), seed)
    _against_torch(block, ta.to_encoder_layer(block, h=cfg.h), run_encoder(case), p=p, seed=seed, device=device,
                   component="EncoderBlock", label="nn.TransformerEncoderLayer", config=config)


@pytest.mark.clause("decoder.block")
@given(case=dense_attention_inputs(decoder=True, mask_kinds=("none", "causal", "key_padding"), **TORCH_CASES),
       d_ff=feed_forward_widths(32), p=rates, seed=seeds)
def test_decoder_block_train_mode_matches_torch_replayed(impl, device, case: AttentionInputs, d_ff: int, p: float,
                                                         seed: int) -> None:
    """nn.TransformerDecoderLayer with the implementation's six dropouts replayed: outputs and gradients."""
    config = noted(case, d_ff=d_ff, p=p, mode="train")
    cfg = case.cfg
    block = randomize_parameters_(decoder_block(impl, cfg.d_model, cfg.h, d_ff, p, device=device, dtype=F64), seed)
    _against_torch(block, ta.to_decoder_layer(block, h=cfg.h), run_decoder(case), p=p, seed=seed, device=device,
                   component="DecoderBlock", label="nn.TransformerDecoderLayer", config=config)


@pytest.mark.clause("transformer.compose")
@given(case=model_inputs(max_d_model=32, max_N=2, max_len=10), p=rates, seed=seeds)
def test_transformer_train_mode_replays_its_dropouts(impl, device, case: ModelInputs, p: float, seed: int) -> None:
    """The whole model, ``project(decode(encode(src), tgt))`` in train mode: against the float64 oracle with its
    dropouts replayed (2 + 4N + 6N sites, in call order), then against nn.Transformer (plus the contract's dropout
    after each positional encoding) with them replayed, outputs and the gradient of every parameter."""
    cfg = type(case.cfg)(**{**case.cfg.kwargs(), "dropout": p})
    config = noted(case, p=p, mode="train")
    model = randomize_parameters_(build_model(impl, cfg, device=device, dtype=F64), seed).train()
    src, tgt = as_tensor(case.src, device), as_tensor(case.tgt, device)
    src_mask, tgt_mask = as_tensor(case.src_mask, device), as_tensor(case.tgt_mask, device)

    def run(m: nn.Module) -> torch.Tensor:
        return m.project(m.decode(m.encode(src, src_mask), src_mask, tgt, tgt_mask))

    def torch_run(m: ta.TorchTransformerModel) -> torch.Tensor:
        memory = ta.encoder_forward(m.transformer.encoder, F.dropout(m.embed_src(src), p), case.src_mask)
        return m.project(ta.decoder_forward(m.transformer.decoder, F.dropout(m.embed_tgt(tgt), p), memory,
                                            case.src_mask, case.tgt_mask))

    out, drawn = _recorded(seed, lambda: run(model))
    drop = RP.Replay(drawn, p, "Transformer")
    _judge(out, lambda: RP.transformer(case.src, case.tgt, case.src_mask, case.tgt_mask, extract_weights(model),
                                       cfg.h, drop.restart(), N=cfg.N),
           component="Transformer (train mode)", config=config, drop=drop)
    twin = ta.TorchTransformerModel(model, h=cfg.h, N=cfg.N, d_ff=cfg.d_ff)
    _against_torch(model, twin, ({}, lambda m: run(m), lambda m: torch_run(m)), p=p, seed=seed, device=device,
                   component="Transformer", label="nn.Transformer", config=config)
