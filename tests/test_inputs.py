"""Bad input gets a specific error, raised early (this package's own hardening, not the conformance contract)."""

from __future__ import annotations

import pytest
import torch

from reference.contract import ModelConfig, build_model

pytestmark = [pytest.mark.strict("bad constructor arguments and inputs raise a specific error early"),
              pytest.mark.clause("strict.bad-inputs")]


@pytest.mark.parametrize(("d_model", "h"), [(10, 3), (64, 5), (6, 4)])
def test_multi_head_attention_rejects_indivisible_d_model(impl, d_model: int, h: int) -> None:
    with pytest.raises(ValueError, match=rf"d_model={d_model} is not divisible by h={h}"):
        impl.MultiHeadAttentionBlock(d_model, h, 0.0)


@pytest.mark.parametrize(("factory", "args", "name"), [
    ("InputEmbeddings", (0, 10), "d_model"), ("InputEmbeddings", (8, 0), "vocab_size"),
    ("PositionalEncoding", (8, 0, 0.0), "seq_len"), ("PositionalEncoding", (-2, 4, 0.0), "d_model"),
    ("LayerNormalization", (0,), "features"), ("FeedForwardBlock", (8, 0, 0.0), "d_ff"),
    ("MultiHeadAttentionBlock", (8, 0, 0.0), "h"), ("ProjectionLayer", (8, -1), "vocab_size"),
])
def test_constructors_reject_non_positive_sizes(impl, factory: str, args: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name}=-?\d+ must be a positive integer"):
        getattr(impl, factory)(*args)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize("factory", ["PositionalEncoding", "FeedForwardBlock", "MultiHeadAttentionBlock"])
def test_constructors_reject_dropout_outside_unit_interval(impl, factory: str, p: float) -> None:
    args = {"PositionalEncoding": (8, 4, p), "FeedForwardBlock": (8, 16, p), "MultiHeadAttentionBlock": (8, 2, p)}
    with pytest.raises(ValueError, match=rf"dropout={p} is outside \[0, 1\)"):
        getattr(impl, factory)(*args[factory])


def test_build_transformer_rejects_bad_sizes(impl) -> None:
    with pytest.raises(ValueError, match="d_model=10 is not divisible by h=3"):
        impl.build_transformer(5, 5, 4, 4, d_model=10, N=1, h=3, d_ff=8)
    with pytest.raises(ValueError, match="N=0 must be a positive integer"):
        impl.build_transformer(5, 5, 4, 4, d_model=8, N=0, h=2, d_ff=8)
    with pytest.raises(TypeError, match="d_model must be an int"):
        impl.build_transformer(5, 5, 4, 4, d_model=8.0, N=1, h=2, d_ff=8)


def test_positional_encoding_rejects_sequence_longer_than_seq_len(impl) -> None:
    pe = impl.PositionalEncoding(8, 5, 0.0)
    with pytest.raises(ValueError, match="sequence length 6 is longer than seq_len=5"):
        pe(torch.zeros(2, 6, 8))


@pytest.mark.parametrize("factory,args", [
    ("PositionalEncoding", (8, 5, 0.0)), ("LayerNormalization", (8,)), ("FeedForwardBlock", (8, 16, 0.0)),
    ("ProjectionLayer", (8, 7)),
])
def test_modules_reject_wrong_last_dimension(impl, factory: str, args: tuple) -> None:
    module = getattr(impl, factory)(*args)
    with pytest.raises(ValueError, match=r"last dimension \(7,\) != d_model=8"):
        module(torch.zeros(2, 3, 7))


def test_attention_rejects_wrong_last_dimension_per_argument(impl) -> None:
    mha = impl.MultiHeadAttentionBlock(8, 2, 0.0)
    good, bad = torch.zeros(2, 3, 8), torch.zeros(2, 3, 6)
    for name, args in (("q", (bad, good, good)), ("k", (good, bad, good)), ("v", (good, good, bad))):
        with pytest.raises(ValueError, match=rf"^{name} has last dimension \(6,\) != d_model=8"):
            mha(*args, None)


def test_attention_rejects_mismatched_batch_and_lengths(impl) -> None:
    mha = impl.MultiHeadAttentionBlock(8, 2, 0.0)
    with pytest.raises(ValueError, match="batch sizes differ"):
        mha(torch.zeros(2, 3, 8), torch.zeros(3, 4, 8), torch.zeros(3, 4, 8), None)
    with pytest.raises(ValueError, match="k and v lengths differ"):
        mha(torch.zeros(2, 3, 8), torch.zeros(2, 4, 8), torch.zeros(2, 5, 8), None)


@pytest.mark.parametrize(("mask_shape", "message"), [
    ((2, 1, 1, 5), r"size 2 on axis B \(expected 1 or 3\)"),     # batch 2 against B = 3
    ((3, 1, 4, 4), r"size 4 on axis Lk \(expected 1 or 5\)"),    # keys 4 against Lk = 5
    ((3, 3, 1, 5), r"size 3 on axis h \(expected 1 or 2\)"),     # 3 heads against h = 2
    ((3, 4, 5), r"size 3 on axis h"),                            # [B, Lq, Lk] would land on the heads
    ((2, 4, 5), r"3-D mask lines up with \[h, Lq, Lk\]"),        # B == h: broadcasts, but along the wrong axis
    ((1, 3, 1, 1, 5), r"more than 4 dims"),
])
def test_attention_rejects_masks_that_do_not_broadcast(impl, mask_shape: tuple, message: str) -> None:
    mha = impl.MultiHeadAttentionBlock(8, 2, 0.0)
    q, kv = torch.zeros(3, 4, 8), torch.zeros(3, 5, 8)
    if mask_shape == (2, 4, 5):  # B == h == 2 so the shape broadcasts and only the axis check can refuse it
        q, kv = torch.zeros(2, 4, 8), torch.zeros(2, 5, 8)
    with pytest.raises(ValueError, match=message):
        mha(q, kv, kv, torch.ones(mask_shape, dtype=torch.bool))


def test_attention_rejects_floating_mask(impl) -> None:
    mha = impl.MultiHeadAttentionBlock(8, 2, 0.0)
    x = torch.zeros(1, 3, 8)
    with pytest.raises(TypeError, match="mask must be a bool or integer tensor"):
        mha(x, x, x, torch.ones(1, 1, 3, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_embeddings_reject_non_integer_token_ids(impl, dtype: torch.dtype) -> None:
    emb = impl.InputEmbeddings(8, 10)
    with pytest.raises(TypeError, match=f"x must hold integer token ids, got dtype {dtype}"):
        emb(torch.zeros(2, 3, dtype=dtype))


def test_embeddings_reject_wrong_rank(impl) -> None:
    with pytest.raises(ValueError, match=r"x must have shape \[B, L\], got \(6,\)"):
        impl.InputEmbeddings(8, 10)(torch.zeros(6, dtype=torch.long))


def test_model_rejects_float_tokens_and_long_targets(impl) -> None:
    model = build_model(impl, ModelConfig(src_seq_len=4, tgt_seq_len=4))
    with pytest.raises(TypeError, match="integer token ids"):
        model.encode(torch.zeros(1, 3), None)
    memory = model.encode(torch.zeros(1, 3, dtype=torch.long), None)
    with pytest.raises(ValueError, match="sequence length 5 is longer than seq_len=4"):
        model.decode(memory, None, torch.zeros(1, 5, dtype=torch.long), None)


def test_mask_helpers_reject_bad_arguments(impl) -> None:
    with pytest.raises(ValueError, match="size=0 must be a positive integer"):
        impl.causal_mask(0)
    with pytest.raises(TypeError, match="tokens must hold integer token ids"):
        impl.padding_mask(torch.zeros(2, 3), 0)
    with pytest.raises(TypeError, match="pad_id must be an int"):
        impl.padding_mask(torch.zeros(2, 3, dtype=torch.long), 0.5)
