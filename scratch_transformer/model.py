"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017), from scratch.

Written the way the blog walkthrough "Coding Transformers from scratch" (after hkproj/pytorch-transformer's
``model.py``) writes it: same class names, constructor arguments and attribute names, pre-norm residuals. Where the
blog is numerically off, this follows the paper and PyTorch (see ``docs/divergences.md``).

Shapes: B batch, L / Lq / Lk sequence lengths, d = d_model, h heads, d_k = d / h.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ._checks import check_dropout, check_features, check_mask, check_positive_int, check_tokens

_is_compiling = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling  # the former: torch 2.3+


class InputEmbeddings(nn.Module):
    """Token ids to vectors: ``embedding(x) * sqrt(d_model)``; Long[B, L] -> [B, L, d]."""

    def __init__(self, d_model: int, vocab_size: int, *, device=None, dtype=None) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("vocab_size", vocab_size)
        self.d_model = d_model
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tokens("x", x)
        return self.embedding(x) * math.sqrt(self.d_model)  # (B, L, d)


def sinusoid_table(seq_len: int, d_model: int) -> torch.Tensor:
    """float64 [seq_len, d]: ``pe[pos, 2i] = sin(pos / 10000^(2i/d))``, ``pe[pos, 2i+1] = cos(same)``."""
    position = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)  # (L, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d/2),)
    angle = position / torch.pow(10000.0, two_i / d_model)  # (L, ceil(d/2))
    pe = torch.empty(seq_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])  # odd d_model: one fewer cosine column
    return pe


class PositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table: ``dropout(x + pe[:, :L])``; [B, L, d] -> [B, L, d].

    ``pe`` ([1, seq_len, d]) is computed in float64 and cast once to the module's dtype; it is recomputed from the
    formula whenever the module changes dtype or device, so ``.double()`` on a float32 model is float64-accurate.
    """

    def __init__(self, d_model: int, seq_len: int, dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("seq_len", seq_len)
        check_dropout(dropout)
        self.d_model = d_model
        self.seq_len = seq_len
        self.dropout = nn.Dropout(dropout)
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        self.register_buffer("pe", self._table(device, dtype), persistent=True)

    def _table(self, device, dtype: torch.dtype) -> torch.Tensor:
        return sinusoid_table(self.seq_len, self.d_model).unsqueeze(0).to(device=device, dtype=dtype)  # (1, L, d)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        old = self.pe
        super()._apply(fn, recurse)
        if self.pe.dtype != old.dtype or self.pe.device != old.device:
            # A cast would carry the old dtype's rounding along; rebuild from the float64 formula instead.
            self.pe = self._table(self.pe.device, self.pe.dtype)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features("x", x, self.d_model, ndim=3)
        length = x.shape[1]
        if length > self.seq_len:
            raise ValueError(f"sequence length {length} is longer than seq_len={self.seq_len}")
        return self.dropout(x + self.pe[:, :length])  # (B, L, d)


class LayerNormalization(nn.Module):
    """``alpha * (x - mean) / sqrt(var + eps) + bias`` over the last dim, biased variance: ``nn.LayerNorm``.

    float16/bfloat16 inputs are normalised in float32 (as PyTorch's kernels accumulate) and cast back.
    """

    def __init__(self, features: int, eps: float = 1e-6, *, device=None, dtype=None) -> None:
        super().__init__()
        check_positive_int("features", features)
        if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0):
            raise ValueError(f"eps={eps!r} must be a positive number")
        self.features = features
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(features, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features("x", x, self.features)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        d = self.features
        # Means as sum / d: the same numbers as .mean() forward and backward (grad / d is the same per element
        # before or after the broadcast), but the backward divides the [.., 1] gradient, not an [.., d] copy.
        mean = xf.sum(dim=-1, keepdim=True) / d  # (..., 1)
        centred = xf - mean  # two-pass: no cancellation under a large common offset
        # Corrected two-pass: x - mean is exact near the mean (Sterbenz), so re-centring removes the rounding of
        # the first mean, which would otherwise cost ~eps * |x| / std (1e-3 in float32 at a 1e4 offset).
        centred = centred - centred.sum(dim=-1, keepdim=True) / d
        var = (centred * centred).sum(dim=-1, keepdim=True) / d  # biased, as the paper and nn.LayerNorm
        normed = centred * torch.rsqrt(var + self.eps)
        if xf is not x:  # 16-bit: the affine in float32 too, so the output is rounded once, as nn.LayerNorm's
            return torch.addcmul(self.bias.float(), normed, self.alpha.float()).to(x.dtype)
        return torch.addcmul(self.bias, normed, self.alpha)  # alpha * normed + bias, one pass


class FeedForwardBlock(nn.Module):
    """``linear_2(dropout(relu(linear_1(x))))``; [B, L, d] -> [B, L, d_ff] -> [B, L, d]."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("d_ff", d_ff)
        check_dropout(dropout)
        self.d_model = d_model
        self.linear_1 = nn.Linear(d_model, d_ff, device=device, dtype=dtype)  # W1, b1
        self.dropout = nn.Dropout(dropout)
        self.linear_2 = nn.Linear(d_ff, d_model, device=device, dtype=dtype)  # W2, b2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features("x", x, self.d_model)
        return self.linear_2(self.dropout(_relu(self.linear_1(x))))


class _ReLUFromOutput(torch.autograd.Function):
    """``relu(h)`` whose backward is ``grad * sign(relu(h))``: the derivative read off the saved output, no bool."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        out = torch.relu(h)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return grad * out.sign()  # sign(out): 1 where h > 0, else 0 (relu's derivative, 0 at h = 0)


def _relu(h: torch.Tensor) -> torch.Tensor:
    """``max(h, 0)`` on ``linear_1``'s fresh output [B, L, d_ff], by the cheapest route that keeps its gradient.

    No autograd: in place (one [B, L, d_ff] buffer fewer; on CPU a page-faulting allocation at these sizes).
    Eager with autograd: ``torch.relu``. Compiled for CPU with autograd: inductor saves ReLU's derivative as
    a bool mask, and its AVX2 code stores a bool mask at ~20 ns per element (10 ms at [16, 64, 512], 20x the ReLU
    itself: docs/performance.md); ``_ReLUFromOutput`` gives the same gradient from the float output that
    ``linear_2`` saves anyway.
    """
    if not h.requires_grad:
        return torch.relu_(h)
    if _is_compiling() and h.device.type == "cpu":
        return _ReLUFromOutput.apply(h)
    return torch.relu(h)


def _may_have_unseen_rows(seen: torch.Tensor) -> bool:
    """Whether attention weights need ``* seen`` to zero query rows with no key to attend to.

    Eager CPU code checks the small [.., Lq, 1] mask and skips a pass over [B, h, Lq, Lk] when every row sees a
    key; compiled code (the multiply fuses into the softmax; no graph break) and GPU code (no host sync) always
    multiply.
    """
    return _is_compiling() or seen.device.type != "cpu" or not bool(seen.all())


class MultiHeadAttentionBlock(nn.Module):
    """``Concat(head_1..head_h) W_o`` with ``head_i = Attention(q W_q^i, k W_k^i, v W_v^i)``.

    q: [B, Lq, d], k and v: [B, Lk, d] -> [B, Lq, d]. ``mask`` (None, or bool/int broadcastable to
    [B, h, Lq, Lk]): nonzero = may attend. The per-head weights [B, h, Lq, Lk] are kept in ``attention_scores``.
    """

    def __init__(self, d_model: int, h: int, dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("h", h)
        check_dropout(dropout)
        if d_model % h != 0:
            raise ValueError(f"d_model={d_model} is not divisible by h={h}")
        self.d_model = d_model
        self.h = h
        self.d_k = d_model // h
        self.w_q = nn.Linear(d_model, d_model, bias=False, device=device, dtype=dtype)
        self.w_k = nn.Linear(d_model, d_model, bias=False, device=device, dtype=dtype)
        self.w_v = nn.Linear(d_model, d_model, bias=False, device=device, dtype=dtype)
        self.w_o = nn.Linear(d_model, d_model, bias=False, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout)
        self.attention_scores: torch.Tensor | None = None

    @staticmethod
    def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                  dropout: nn.Dropout | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``softmax(q k^T / sqrt(d_k)) v``; q: [B, h, Lq, d_k], k, v: [B, h, Lk, d_k] -> ([B, h, Lq, d_k], weights).

        Masked keys (mask == 0) get exactly zero weight: their scores are pushed to the dtype's most negative
        finite value (safe in float16/bfloat16) by an additive bias built on the small, broadcastable mask, which
        costs one in-place add over the scores where a masked_fill costs a copy and a slower fill. A row with every
        key masked gets all-zero weights and so a zero output. float16/bfloat16 inputs are attended in float32 (as
        PyTorch's fused kernels accumulate) and cast back: weights rounded to 16 bits before ``@ v`` made the
        bfloat16 model's error 1.5x torch's, against 1.1x this way (docs/divergences.md).
        """
        if query.dtype in (torch.float16, torch.bfloat16):
            out, weights = MultiHeadAttentionBlock.attention(query.float(), key.float(), value.float(), mask, dropout)
            return out.to(query.dtype), weights.to(query.dtype)
        d_k = query.shape[-1]
        scores = query @ key.transpose(-2, -1)  # (B, h, Lq, Lk)
        scores /= math.sqrt(d_k)  # in place, as the mask below: every [B, h, Lq, Lk] buffer costs
        if mask is not None:
            scores += torch.zeros_like(mask, dtype=scores.dtype).masked_fill_(mask.logical_not(), torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1)
            seen = mask.any(dim=-1, keepdim=True)  # (.., Lq, 1): rows with a key to attend to
            if _may_have_unseen_rows(seen):
                weights = weights * seen  # fully masked rows: 0, not uniform
        else:
            weights = scores.softmax(dim=-1)
        if dropout is not None:
            weights = dropout(weights)
        return weights @ value, weights  # (B, h, Lq, d_k), (B, h, Lq, Lk)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        for name, t in (("q", q), ("k", k), ("v", v)):
            check_features(name, t, self.d_model, ndim=3)
        batch, len_q, len_k = q.shape[0], q.shape[1], k.shape[1]
        if k.shape[0] != batch or v.shape[0] != batch:
            raise ValueError(f"batch sizes differ: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
        if v.shape[1] != len_k:
            raise ValueError(f"k and v lengths differ: k {tuple(k.shape)}, v {tuple(v.shape)}")
        check_mask(mask, (batch, self.h, len_q, len_k))

        # Split heads, each made contiguous: batched matmuls on the strided transpose view are ~1.5x slower on CPU.
        query = self.w_q(q).view(batch, len_q, self.h, self.d_k).transpose(1, 2).contiguous()  # (B, h, Lq, d_k)
        key = self.w_k(k).view(batch, len_k, self.h, self.d_k).transpose(1, 2).contiguous()  # (B, h, Lk, d_k)
        value = self.w_v(v).view(batch, len_k, self.h, self.d_k).transpose(1, 2).contiguous()  # (B, h, Lk, d_k)
        x, self.attention_scores = MultiHeadAttentionBlock.attention(query, key, value, mask, self.dropout)
        x = x.transpose(1, 2).contiguous().view(batch, len_q, self.d_model)  # (B, Lq, d)
        return self.w_o(x)


class ResidualConnection(nn.Module):
    """Pre-norm residual: ``x + dropout(sublayer(norm(x)))``."""

    def __init__(self, features: int, dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        check_dropout(dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = LayerNormalization(features, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return x + self.dropout(sublayer(self.norm(x)))


class EncoderBlock(nn.Module):
    """Self-attention then feed-forward, each in a pre-norm residual; [B, L, d] -> [B, L, d]."""

    def __init__(self, features: int, self_attention_block: MultiHeadAttentionBlock,
                 feed_forward_block: FeedForwardBlock, dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.self_attention_block = self_attention_block
        self.feed_forward_block = feed_forward_block
        self.residual_connections = nn.ModuleList(
            [ResidualConnection(features, dropout, device=device, dtype=dtype) for _ in range(2)])

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.residual_connections[0](x, lambda x: self.self_attention_block(x, x, x, src_mask))
        return self.residual_connections[1](x, self.feed_forward_block)


class Encoder(nn.Module):
    """N encoder blocks, then a final LayerNorm (needed with pre-norm residuals)."""

    def __init__(self, features: int, layers: nn.ModuleList, *, device=None, dtype=None) -> None:
        super().__init__()
        self.layers = layers
        self.norm = LayerNormalization(features, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class DecoderBlock(nn.Module):
    """Masked self-attention, cross-attention over the encoder output, feed-forward; pre-norm residuals."""

    def __init__(self, features: int, self_attention_block: MultiHeadAttentionBlock,
                 cross_attention_block: MultiHeadAttentionBlock, feed_forward_block: FeedForwardBlock,
                 dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.self_attention_block = self_attention_block
        self.cross_attention_block = cross_attention_block
        self.feed_forward_block = feed_forward_block
        self.residual_connections = nn.ModuleList(
            [ResidualConnection(features, dropout, device=device, dtype=dtype) for _ in range(3)])

    def forward(self, x: torch.Tensor, encoder_output: torch.Tensor, src_mask: torch.Tensor | None,
                tgt_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.residual_connections[0](x, lambda x: self.self_attention_block(x, x, x, tgt_mask))
        x = self.residual_connections[1](
            x, lambda x: self.cross_attention_block(x, encoder_output, encoder_output, src_mask))
        return self.residual_connections[2](x, self.feed_forward_block)


class Decoder(nn.Module):
    """N decoder blocks, then a final LayerNorm."""

    def __init__(self, features: int, layers: nn.ModuleList, *, device=None, dtype=None) -> None:
        super().__init__()
        self.layers = layers
        self.norm = LayerNormalization(features, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, encoder_output: torch.Tensor, src_mask: torch.Tensor | None,
                tgt_mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, encoder_output, src_mask, tgt_mask)
        return self.norm(x)


class ProjectionLayer(nn.Module):
    """Logits over the vocabulary (no softmax): [B, L, d] -> [B, L, vocab]."""

    def __init__(self, d_model: int, vocab_size: int, *, device=None, dtype=None) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("vocab_size", vocab_size)
        self.d_model = d_model
        self.proj = nn.Linear(d_model, vocab_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features("x", x, self.d_model)
        return self.proj(x)


class Transformer(nn.Module):
    """``project(decode(encode(src, src_mask), src_mask, tgt, tgt_mask))``."""

    def __init__(self, encoder: Encoder, decoder: Decoder, src_embed: InputEmbeddings, tgt_embed: InputEmbeddings,
                 src_pos: PositionalEncoding, tgt_pos: PositionalEncoding, projection_layer: ProjectionLayer,
                 *, device=None, dtype=None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.src_embed = src_embed
        self.tgt_embed = tgt_embed
        self.src_pos = src_pos
        self.tgt_pos = tgt_pos
        self.projection_layer = projection_layer
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        """Long[B, Ls] -> [B, Ls, d]."""
        return self.encoder(self.src_pos(self.src_embed(src)), src_mask)

    def decode(self, encoder_output: torch.Tensor, src_mask: torch.Tensor | None, tgt: torch.Tensor,
               tgt_mask: torch.Tensor | None) -> torch.Tensor:
        """Long[B, Lt] with the encoder output [B, Ls, d] -> [B, Lt, d]."""
        return self.decoder(self.tgt_pos(self.tgt_embed(tgt)), encoder_output, src_mask, tgt_mask)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[B, Lt, d] -> logits [B, Lt, vocab]."""
        return self.projection_layer(x)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.project(self.decode(self.encode(src, src_mask), src_mask, tgt, tgt_mask))


def build_transformer(src_vocab_size: int, tgt_vocab_size: int, src_seq_len: int, tgt_seq_len: int,
                      d_model: int = 512, N: int = 6, h: int = 8, dropout: float = 0.1, d_ff: int = 2048,
                      *, device=None, dtype=None) -> Transformer:
    """The base model of the paper (d=512, N=6, h=8, d_ff=2048); every matrix Xavier-uniform initialised."""
    check_positive_int("N", N)
    kw = {"device": device, "dtype": dtype}
    src_embed = InputEmbeddings(d_model, src_vocab_size, **kw)
    tgt_embed = InputEmbeddings(d_model, tgt_vocab_size, **kw)
    src_pos = PositionalEncoding(d_model, src_seq_len, dropout, **kw)
    tgt_pos = PositionalEncoding(d_model, tgt_seq_len, dropout, **kw)
    encoder_blocks = [
        EncoderBlock(d_model, MultiHeadAttentionBlock(d_model, h, dropout, **kw),
                     FeedForwardBlock(d_model, d_ff, dropout, **kw), dropout, **kw)
        for _ in range(N)]
    decoder_blocks = [
        DecoderBlock(d_model, MultiHeadAttentionBlock(d_model, h, dropout, **kw),
                     MultiHeadAttentionBlock(d_model, h, dropout, **kw),
                     FeedForwardBlock(d_model, d_ff, dropout, **kw), dropout, **kw)
        for _ in range(N)]
    encoder = Encoder(d_model, nn.ModuleList(encoder_blocks), **kw)
    decoder = Decoder(d_model, nn.ModuleList(decoder_blocks), **kw)
    projection_layer = ProjectionLayer(d_model, tgt_vocab_size, **kw)
    transformer = Transformer(encoder, decoder, src_embed, tgt_embed, src_pos, tgt_pos, projection_layer)
    for p in transformer.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return transformer
