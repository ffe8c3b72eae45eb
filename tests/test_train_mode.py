"""Train mode judged exactly (issue 34): each component called in train mode with dropout p > 0 under
``reference.kit.replay.DropoutRecorder`` (every dropout it draws is drawn there, from a seeded generator, and kept
in call order), against the float64 oracle that applies the same masks at the contract's sites
(``reference.oracles.replay``: after the positional encoding, on the attention weights, on the FFN's hidden
activation, on each residual branch). A dropout missing, extra, at another rate or on a tensor of another shape is a
``DropoutSiteError`` naming the site; one moved where the shapes agree changes the output and fails the comparison.

Float64 throughout; tolerance: the float64 value table widened to the oracle's conditioning bound, as every oracle
comparison (``tests/test_equivalence_oracle.py``'s ``_check``). The implementation's own dropout semantics (fraction,
scaling, eval identity) are ``dropout.semantics``'s (tests/test_dropout_state.py): here the recorder draws them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.kit.replay import DropoutRecorder
from reference.kit.weights import extract_weights, to_numpy
from reference.oracles import replay as RP
from reference.spec import variants
from reference.spec.contract import construct, randomize_parameters_
from tests.strategies import AttentionInputs, dense_attention_inputs, feed_forward_widths
from tests.support import decoder_block, encoder_block, noted
from tests.test_equivalence_oracle import _check

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
