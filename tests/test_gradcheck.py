"""``torch.autograd.gradcheck`` on every component's forward, in float64 at tiny sizes.

Checked w.r.t. the floating inputs (q, k, v, x, encoder output) and a few parameters through
``torch.func.functional_call``, with masks drawn from ``tests.strategies.masks`` (fully masked rows included),
and on a tiny full model w.r.t. the encoder and decoder inputs past the embeddings. Finite differences are judged
by gradcheck's own tolerances (eps 1e-6, atol 1e-5, rtol 1e-3): their error is the central difference's, not the
implementation's rounding, so the GRAD_TOL table does not apply. Modules run in eval mode with dropout p > 0 built
in: a dropout that stayed on would make every check fail.
"""

from __future__ import annotations

import pytest

from typing import Callable

import numpy as np
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

from reference.kit import components
from reference.spec.contract import ModelConfig, build_model, construct, randomize_parameters_
from tests.strategies import MODEL_SRC_MASK_KINDS, MODEL_TGT_MASK_KINDS, AttentionConfig, masks

DTYPE = torch.float64
P = 0.1  # dropout built in; eval must switch it off
#: One tiny cross-attention shape: B=2, h=2, d_k=2 (d_model 4), Lq=3, Lk=4; self-attention uses Lk = Lq.
CROSS = AttentionConfig(B=2, h=2, d_k=2, Lq=3, Lk=4)
SELF = AttentionConfig(B=2, h=2, d_k=2, Lq=3, Lk=3)
D_FF = 5
FEW = settings(max_examples=6)  # gradcheck costs 2 forwards per input element
FEWER = settings(max_examples=3)  # stacks and the model


def _inputs(*shapes: tuple[int, ...], device: str, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=DTYPE).to(device).requires_grad_() for s in shapes]


def _module(factory, *args, device: str, seed: int = 0) -> nn.Module:
    return randomize_parameters_(construct(factory, *args, device=device, dtype=DTYPE), seed).eval()


def _mask(mask: np.ndarray | None, device: str) -> torch.Tensor | None:
    return None if mask is None else torch.as_tensor(mask, device=device)


def _check(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor, label: str, fast: bool = False) -> None:
    """gradcheck; ``fast`` checks one random projection v^T J u instead of every column (blocks and stacks)."""
    __tracebackhide__ = True
    assert torch.autograd.gradcheck(fn, tuple(inputs), raise_exception=True, fast_mode=fast), label


def _param(module: nn.Module, name: str) -> torch.Tensor:
    return dict(module.named_parameters())[name].detach().clone().requires_grad_()


def _check_wrt_parameters(module: nn.Module, names: tuple[str, ...], x: torch.Tensor, *, label: str,
                          args: tuple = ()) -> None:
    """gradcheck of ``module(x, *args)`` w.r.t. x and the parameters ``names`` (through ``functional_call``)."""
    __tracebackhide__ = True
    params = [_param(module, name) for name in names]
    _check(lambda x, *ps: functional_call(module, dict(zip(names, ps)), (x, *args)), x, *params, label=label)


# ------------------------------------------------------------------------------------------------ position-wise
@pytest.mark.clause("module.autograd")
def test_input_embeddings_gradcheck_wrt_table(impl, device) -> None:
    emb = _module(impl.InputEmbeddings, 4, 7, device=device)
    tokens = torch.tensor([[0, 3, 3], [6, 1, 0]], device=device)
    table = _param(emb, "embedding.weight")
    _check(lambda w: functional_call(emb, {"embedding.weight": w}, (tokens,)), table, label="InputEmbeddings")


@pytest.mark.clause("module.autograd")
def test_positional_encoding_gradcheck(impl, device) -> None:
    pe = construct(impl.PositionalEncoding, 4, 6, P, device=device, dtype=DTYPE).eval()
    (x,) = _inputs((2, 3, 4), device=device)
    _check(pe, x, label="PositionalEncoding")


@pytest.mark.clause("module.autograd")
def test_layer_normalization_gradcheck_wrt_input_and_parameters(impl, device) -> None:
    norm = _module(impl.LayerNormalization, 5, device=device)
    (x,) = _inputs((2, 3, 5), device=device)
    _check_wrt_parameters(norm, ("alpha", "bias"), x, label="LayerNormalization")


@pytest.mark.clause("module.autograd")
def test_feed_forward_block_gradcheck_wrt_input_and_weights(impl, device) -> None:
    ff = _module(impl.FeedForwardBlock, 4, D_FF, P, device=device)
    (x,) = _inputs((2, 3, 4), device=device)
    _check_wrt_parameters(ff, ("linear_1.weight", "linear_2.bias"), x, label="FeedForwardBlock")


@pytest.mark.clause("module.autograd")
def test_projection_layer_gradcheck_wrt_input_and_weight(impl, device) -> None:
    proj = _module(impl.ProjectionLayer, 4, 6, device=device)
    (x,) = _inputs((2, 3, 4), device=device)
    _check_wrt_parameters(proj, ("proj.weight",), x, label="ProjectionLayer")


@pytest.mark.clause("module.autograd")
def test_residual_connection_gradcheck_with_feed_forward_sublayer(impl, device) -> None:
    res = _module(impl.ResidualConnection, 4, P, device=device)
    ff = _module(impl.FeedForwardBlock, 4, D_FF, P, device=device, seed=1)
    (x,) = _inputs((2, 3, 4), device=device)
    _check_wrt_parameters(res, ("norm.alpha",), x, args=(ff,), label="ResidualConnection")


# ------------------------------------------------------------------------------------------------ attention
@pytest.mark.clause("module.autograd", "mask.fully-masked-finite")
@FEW
@given(drawn=masks(CROSS))
def test_multi_head_attention_block_gradcheck_wrt_qkv_and_w_q(impl, device, drawn) -> None:
    """Cross-attention (Lq != Lk) under every mask kind, fully masked rows included."""
    kind, mask = drawn
    note(f"mask={kind}")
    cfg = CROSS
    mha = _module(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, P, device=device)
    q, k, v = _inputs((cfg.B, cfg.Lq, cfg.d_model), (cfg.B, cfg.Lk, cfg.d_model), (cfg.B, cfg.Lk, cfg.d_model),
                      device=device)
    w_q = _param(mha, "w_q.weight")
    m = _mask(mask, device)
    _check(lambda q, k, v, w: functional_call(mha, {"w_q.weight": w}, (q, k, v, m)), q, k, v, w_q,
           label=f"MultiHeadAttentionBlock mask={kind}", fast=True)


@pytest.mark.clause("module.autograd")
@FEW
@given(drawn=masks(CROSS))
def test_attention_static_gradcheck_wrt_qkv(impl, device, drawn) -> None:
    kind, mask = drawn
    note(f"mask={kind}")
    cfg = CROSS
    q, k, v = _inputs((cfg.B, cfg.h, cfg.Lq, cfg.d_k), (cfg.B, cfg.h, cfg.Lk, cfg.d_k),
                      (cfg.B, cfg.h, cfg.Lk, cfg.d_k), device=device)
    m = _mask(mask, device)
    _check(lambda q, k, v: impl.MultiHeadAttentionBlock.attention(q, k, v, m, None)[0], q, k, v,
           label=f"attention mask={kind}")


# ------------------------------------------------------------------------------------------------ blocks, stacks
SIZES = ModelConfig(d_model=4, h=2, d_ff=D_FF, dropout=P)


def _encoder_block(impl, device: str, seed: int) -> nn.Module:
    return randomize_parameters_(components.build(impl, "encoder_block", SIZES, device=device, dtype=DTYPE),
                                 seed).eval()


def _decoder_block(impl, device: str, seed: int) -> nn.Module:
    return randomize_parameters_(components.build(impl, "decoder_block", SIZES, device=device, dtype=DTYPE),
                                 seed).eval()


@pytest.mark.clause("module.autograd")
@FEW
@given(drawn=masks(SELF))
def test_encoder_block_gradcheck(impl, device, drawn) -> None:
    kind, mask = drawn
    note(f"mask={kind}")
    block = _encoder_block(impl, device, 0)
    (x,) = _inputs((SELF.B, SELF.Lq, SELF.d_model), device=device)
    m = _mask(mask, device)
    _check(lambda x: block(x, m), x, label=f"EncoderBlock mask={kind}")


@pytest.mark.clause("module.autograd")
@FEW
@given(src=masks(CROSS), tgt=masks(SELF))
def test_decoder_block_gradcheck_wrt_input_and_encoder_output(impl, device, src, tgt) -> None:
    note(f"src_mask={src[0]}, tgt_mask={tgt[0]}")
    block = _decoder_block(impl, device, 0)
    x, memory = _inputs((CROSS.B, CROSS.Lq, CROSS.d_model), (CROSS.B, CROSS.Lk, CROSS.d_model), device=device)
    sm, tm = _mask(src[1], device), _mask(tgt[1], device)
    _check(lambda x, mem: block(x, mem, sm, tm), x, memory, label=f"DecoderBlock src={src[0]} tgt={tgt[0]}",
           fast=True)


@pytest.mark.clause("module.autograd")
@FEWER
@given(src=masks(SELF, allow_fully_masked=False))
def test_encoder_gradcheck(impl, device, src) -> None:
    kw = dict(device=device, dtype=DTYPE)
    enc = randomize_parameters_(construct(impl.Encoder, 4, nn.ModuleList(
        [_encoder_block(impl, device, s) for s in range(2)]), **kw), 3).eval()
    (x,) = _inputs((SELF.B, SELF.Lq, SELF.d_model), device=device)
    m = _mask(src[1], device)
    _check(lambda x: enc(x, m), x, label=f"Encoder mask={src[0]}", fast=True)


@pytest.mark.clause("module.autograd")
@FEWER
@given(src=masks(CROSS, allow_fully_masked=False), tgt=masks(SELF, allow_fully_masked=False))
def test_decoder_gradcheck(impl, device, src, tgt) -> None:
    kw = dict(device=device, dtype=DTYPE)
    dec = randomize_parameters_(construct(impl.Decoder, 4, nn.ModuleList(
        [_decoder_block(impl, device, s) for s in range(2)]), **kw), 3).eval()
    x, memory = _inputs((CROSS.B, CROSS.Lq, CROSS.d_model), (CROSS.B, CROSS.Lk, CROSS.d_model), device=device)
    sm, tm = _mask(src[1], device), _mask(tgt[1], device)
    _check(lambda x, mem: dec(x, mem, sm, tm), x, memory, label=f"Decoder src={src[0]} tgt={tgt[0]}",
           fast=True)


# ------------------------------------------------------------------------------------------------ full model
MODEL = ModelConfig(src_vocab_size=5, tgt_vocab_size=6, src_seq_len=4, tgt_seq_len=3, d_model=4, N=2, h=2,
                    dropout=P, d_ff=D_FF)
MODEL_SRC = AttentionConfig(B=2, h=2, d_k=2, Lq=4, Lk=4)
MODEL_TGT = AttentionConfig(B=2, h=2, d_k=2, Lq=3, Lk=3)


@pytest.mark.clause("module.autograd")
@FEWER
@given(src=st.sampled_from(MODEL_SRC_MASK_KINDS).flatmap(lambda k: masks(MODEL_SRC, kind=k, allow_fully_masked=False)),
       tgt=st.sampled_from(MODEL_TGT_MASK_KINDS).flatmap(lambda k: masks(MODEL_TGT, kind=k, allow_fully_masked=False)))
def test_transformer_gradcheck_wrt_embedded_inputs(impl, device, src, tgt) -> None:
    """logits(x, y) = project(decoder(tgt_pos(y), encoder(src_pos(x), sm), sm, tm)) w.r.t. the embedded x, y."""
    note(f"src_mask={src[0]}, tgt_mask={tgt[0]}")
    model = randomize_parameters_(build_model(impl, MODEL, device=device, dtype=DTYPE), 0).eval()
    x, y = _inputs((2, 4, 4), (2, 3, 4), device=device)
    sm, tm = _mask(src[1], device), _mask(tgt[1], device)

    def logits(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        memory = model.encoder(model.src_pos(x), sm)
        return model.project(model.decoder(model.tgt_pos(y), memory, sm, tm))

    _check(logits, x, y, label=f"Transformer src={src[0]} tgt={tgt[0]}", fast=True)
