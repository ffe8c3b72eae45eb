"""Output shapes of every contract module and of the full model, over drawn sizes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from reference.spec.contract import build_model, construct, missing_extras
from tests.strategies import AttentionConfig, attention_configs, model_configs
from tests.support import attention_results, skip_unless_extras

DTYPE = torch.float32


def _randn(*shape: int, device: str) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=DTYPE)


@pytest.mark.clause("embed.scaled-lookup", "api.signatures")
@given(cfg=attention_configs(), vocab=st.integers(1, 50))
def test_input_embeddings_shape(impl, device, cfg: AttentionConfig, vocab: int) -> None:
    emb = construct(impl.InputEmbeddings, cfg.d_model, vocab, device=device, dtype=DTYPE)
    tokens = torch.randint(0, vocab, (cfg.B, cfg.Lq), device=device)
    assert emb(tokens).shape == (cfg.B, cfg.Lq, cfg.d_model)


@pytest.mark.clause("pe.add", "pe.buffer")
@given(cfg=attention_configs(), extra=st.integers(0, 5))
def test_positional_encoding_shape(impl, device, cfg: AttentionConfig, extra: int) -> None:
    pe = construct(impl.PositionalEncoding, cfg.d_model, cfg.Lq + extra, 0.0, device=device, dtype=DTYPE)
    assert tuple(pe.pe.shape) == (1, cfg.Lq + extra, cfg.d_model)
    assert pe(_randn(cfg.B, cfg.Lq, cfg.d_model, device=device)).shape == (cfg.B, cfg.Lq, cfg.d_model)


@pytest.mark.clause("ln.biased-variance")
@given(cfg=attention_configs())
def test_layer_normalization_shape(impl, device, cfg: AttentionConfig) -> None:
    norm = construct(impl.LayerNormalization, cfg.d_model, device=device, dtype=DTYPE)
    assert norm(_randn(cfg.B, cfg.Lq, cfg.d_model, device=device)).shape == (cfg.B, cfg.Lq, cfg.d_model)


@pytest.mark.clause("ln.per-feature-affine")
@given(cfg=attention_configs())
def test_layer_normalization_gain_and_shift_are_per_feature(impl, device, cfg: AttentionConfig) -> None:
    norm = construct(impl.LayerNormalization, cfg.d_model, device=device, dtype=DTYPE)
    assert tuple(norm.alpha.shape) == tuple(norm.bias.shape) == (cfg.d_model,)


@pytest.mark.clause("ffn.formula")
@given(cfg=attention_configs(), d_ff=st.integers(1, 96))
def test_feed_forward_block_shape(impl, device, cfg: AttentionConfig, d_ff: int) -> None:
    ff = construct(impl.FeedForwardBlock, cfg.d_model, d_ff, 0.0, device=device, dtype=DTYPE)
    assert tuple(ff.linear_1.weight.shape) == (d_ff, cfg.d_model)
    assert tuple(ff.linear_2.weight.shape) == (cfg.d_model, d_ff)
    assert ff(_randn(cfg.B, cfg.Lq, cfg.d_model, device=device)).shape == (cfg.B, cfg.Lq, cfg.d_model)


@pytest.mark.clause("mha.formula", "mask.semantics")
@given(cfg=attention_configs())
def test_multi_head_attention_block_shape(impl, device, cfg: AttentionConfig) -> None:
    note(cfg)
    mha = construct(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, 0.0, device=device, dtype=DTYPE)
    assert (mha.d_model, mha.h, mha.d_k) == (cfg.d_model, cfg.h, cfg.d_k)
    for name in ("w_q", "w_k", "w_v", "w_o"):  # a bias [d] on each is legal (absent = zero)
        projection = getattr(mha, name)
        assert tuple(projection.weight.shape) == (cfg.d_model, cfg.d_model)
        bias = getattr(projection, "bias", None)
        assert bias is None or tuple(bias.shape) == (cfg.d_model,), f"{name}.bias of shape {tuple(bias.shape)}"
    q = _randn(cfg.B, cfg.Lq, cfg.d_model, device=device)
    kv = _randn(cfg.B, cfg.Lk, cfg.d_model, device=device)
    # the output [B, Lq, d_model] and the weights kept in attention_scores [B, h, Lq, Lk]
    attention_results(mha, mha(q, kv, kv, None), cfg, config={"cfg": cfg})


@pytest.mark.strict("attention projections have no bias")
@pytest.mark.clause("strict.no-projection-bias")
def test_multi_head_attention_projections_have_no_bias(impl, device) -> None:
    """``w_q``, ``w_k``, ``w_v`` and ``w_o`` are bias-free, as the paper writes them (``Q W^Q``): the contract also
    admits biased projections (``nn.Linear``'s default, ``nn.MultiheadAttention``'s), this package has none."""
    mha = construct(impl.MultiHeadAttentionBlock, 8, 2, 0.0, device=device, dtype=DTYPE)
    for name in ("w_q", "w_k", "w_v", "w_o"):
        assert getattr(getattr(mha, name), "bias", None) is None, f"{name} has a bias"
        assert [n for n, _ in getattr(mha, name).named_parameters()] == ["weight"], f"{name}: parameters beyond weight"


@pytest.mark.clause("mha.static-attention")
@given(cfg=attention_configs())
def test_attention_static_shape(impl, device, cfg: AttentionConfig) -> None:
    q = _randn(cfg.B, cfg.h, cfg.Lq, cfg.d_k, device=device)
    k = _randn(cfg.B, cfg.h, cfg.Lk, cfg.d_k, device=device)
    v = _randn(cfg.B, cfg.h, cfg.Lk, cfg.d_k, device=device)
    out, weights = impl.MultiHeadAttentionBlock.attention(q, k, v, None, None)
    assert out.shape == (cfg.B, cfg.h, cfg.Lq, cfg.d_k)
    assert weights.shape == (cfg.B, cfg.h, cfg.Lq, cfg.Lk)


@pytest.mark.clause("transformer.compose", "projection.logits")
@given(cfg=model_configs(), B=st.integers(1, 3), src_len=st.integers(1, 16), tgt_len=st.integers(1, 16))
def test_transformer_shapes(impl, device, cfg, B: int, src_len: int, tgt_len: int) -> None:
    """encode -> [B, Ls, d], decode -> [B, Lt, d], project -> [B, Lt, tgt_vocab]; blocks and stacks as built."""
    src_len, tgt_len = min(src_len, cfg.src_seq_len), min(tgt_len, cfg.tgt_seq_len)
    note(f"{cfg}, B={B}, Ls={src_len}, Lt={tgt_len}")
    model = build_model(impl, cfg, device=device).eval()
    assert len(model.encoder.layers) == len(model.decoder.layers) == cfg.N
    assert len(model.encoder.layers[0].residual_connections) == 2
    assert len(model.decoder.layers[0].residual_connections) == 3
    src = torch.randint(0, cfg.src_vocab_size, (B, src_len), device=device)
    tgt = torch.randint(0, cfg.tgt_vocab_size, (B, tgt_len), device=device)
    src_mask = torch.ones(B, 1, 1, src_len, dtype=torch.bool, device=device)
    tgt_mask = torch.tril(torch.ones(1, tgt_len, tgt_len, dtype=torch.bool, device=device))
    memory = model.encode(src, src_mask)
    assert memory.shape == (B, src_len, cfg.d_model)
    decoded = model.decode(memory, src_mask, tgt, tgt_mask)
    assert decoded.shape == (B, tgt_len, cfg.d_model)
    logits = model.project(decoded)
    assert logits.shape == (B, tgt_len, cfg.tgt_vocab_size)


@pytest.mark.clause("extra.forward")
@given(cfg=model_configs(), B=st.integers(1, 3), src_len=st.integers(1, 16), tgt_len=st.integers(1, 16))
def test_transformer_forward_is_project_decode_encode(impl, device, cfg, B: int, src_len: int, tgt_len: int
                                                       ) -> None:
    """``Transformer.forward(src, tgt, src_mask, tgt_mask)`` (an extra beyond the blog) is
    ``project(decode(encode(src, src_mask), src_mask, tgt, tgt_mask))``: logits [B, Lt, tgt_vocab], the same values.
    Judged under its own clause (not transformer.compose), so a forward that stops at the decoder (the Annotated
    Transformer's) fails extra.forward and nothing the blog's API defines."""
    if missing_extras(impl, "Transformer.forward"):
        pytest.skip("implementation lacks Transformer.forward")
    src_len, tgt_len = min(src_len, cfg.src_seq_len), min(tgt_len, cfg.tgt_seq_len)
    model = build_model(impl, cfg, device=device, dtype=torch.float64).eval()
    src = torch.randint(0, cfg.src_vocab_size, (B, src_len), device=device)
    tgt = torch.randint(0, cfg.tgt_vocab_size, (B, tgt_len), device=device)
    src_mask = torch.ones(B, 1, 1, src_len, dtype=torch.bool, device=device)
    tgt_mask = torch.tril(torch.ones(1, tgt_len, tgt_len, dtype=torch.bool, device=device))
    with torch.no_grad():
        forward = model(src, tgt, src_mask, tgt_mask)
        composed = model.project(model.decode(model.encode(src, src_mask), src_mask, tgt, tgt_mask))
    assert forward.shape == composed.shape, (
        f"Transformer.forward returned shape {tuple(forward.shape)}; project(decode(encode(...))) has "
        f"{tuple(composed.shape)} [B, Lt, tgt_vocab]")
    # the same float64 computation in the same order: only a different summation order can separate them
    torch.testing.assert_close(forward, composed, rtol=1e-12, atol=1e-12)


@pytest.mark.clause("extra.mask-helpers")
@given(size=st.integers(1, 32))
def test_causal_mask_shape(impl, size: int) -> None:
    skip_unless_extras(impl, "causal_mask")
    mask = impl.causal_mask(size)
    assert mask.shape == (1, size, size) and mask.dtype == torch.bool


@pytest.mark.clause("extra.mask-helpers")
@given(B=st.integers(1, 4), L=st.integers(1, 16))
def test_padding_mask_shape(impl, B: int, L: int) -> None:
    skip_unless_extras(impl, "padding_mask")
    mask = impl.padding_mask(torch.randint(0, 5, (B, L)), 0)
    assert mask.shape == (B, 1, 1, L) and mask.dtype == torch.bool


@pytest.mark.strict("outputs and attention_scores keep the input dtype")
@pytest.mark.clause("strict.dtype-kept")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64],
                         ids=["float16", "bfloat16", "float32", "float64"])
@given(cfg=attention_configs())
def test_attention_keeps_the_input_dtype_in_outputs_and_weights(impl, device, dtype: torch.dtype,
                                                                cfg: AttentionConfig) -> None:
    """The block's output, its ``attention_scores`` and the static ``attention``'s (out, weights) are all in the
    input dtype: a float32 copy of the [B, h, Lq, Lk] weights kept from a 16-bit model doubles the largest buffer."""
    note(cfg)
    mha = construct(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, 0.0, device=device, dtype=dtype)
    q = torch.randn(cfg.B, cfg.Lq, cfg.d_model, device=device, dtype=dtype)
    kv = torch.randn(cfg.B, cfg.Lk, cfg.d_model, device=device, dtype=dtype)
    assert mha(q, kv, kv, None).dtype == dtype
    assert mha.attention_scores.dtype == dtype, f"attention_scores is {mha.attention_scores.dtype}, input {dtype}"
    heads = [torch.randn(cfg.B, cfg.h, n, cfg.d_k, device=device, dtype=dtype) for n in (cfg.Lq, cfg.Lk, cfg.Lk)]
    out, weights = impl.MultiHeadAttentionBlock.attention(*heads, None, None)
    assert (out.dtype, weights.dtype) == (dtype, dtype), f"attention returned ({out.dtype}, {weights.dtype})"
