"""An independent implementation of the scratch-transformer contract (README, "The contract" and "Masks").

Written from the README table alone, without reading ``scratch_transformer``.  It deliberately differs in
style from the usual minimal version: ``-inf`` fill with a NaN clean-up for fully masked rows, float32
internals for 16-bit inputs, ``torch.var_mean`` layer norm and reshape/permute head splitting.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

VARIANT = "an independent implementation of the README contract, written without reading scratch_transformer"
COMPONENT = "whole model"

__all__ = [
    "InputEmbeddings", "PositionalEncoding", "LayerNormalization", "FeedForwardBlock", "MultiHeadAttentionBlock",
    "ResidualConnection", "EncoderBlock", "Encoder", "DecoderBlock", "Decoder", "ProjectionLayer", "Transformer",
    "build_transformer", "causal_mask", "padding_mask",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype internal reductions run in: float32 for 16-bit floats, the input dtype otherwise."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


# --------------------------------------------------------------------------------------------------- embeddings


class InputEmbeddings(nn.Module):
    def __init__(self, d_model: int, vocab_size: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.d_model = d_model
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, seq_len: int, dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.d_model = d_model
        self.seq_len = seq_len
        self.dropout = nn.Dropout(dropout)
        target = dtype if dtype is not None else torch.get_default_dtype()
        # Built in float64 on the CPU, cast once to the module's dtype and device.
        position = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)              # [L, 1]
        div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64)
                             * (-math.log(10000.0) / d_model))                          # [ceil(d/2)]
        angles = position * div_term                                                    # [L, ceil(d/2)]
        table = torch.zeros(seq_len, d_model, dtype=torch.float64)
        table[:, 0::2] = torch.sin(angles)
        table[:, 1::2] = torch.cos(angles[:, : d_model // 2])                           # odd d: one fewer cosine
        self.register_buffer("pe", table.unsqueeze(0).to(device=device, dtype=target), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        if length > self.seq_len:
            raise ValueError(f"sequence length {length} exceeds the positional table's {self.seq_len}")
        return self.dropout(x + self.pe[:, :length].detach())


# ------------------------------------------------------------------------------------------------ normalisation


class LayerNormalization(nn.Module):
    def __init__(self, features: int, eps: float = 1e-6, *, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(features, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = x.dtype
        work = _compute_dtype(out_dtype)
        xw = x.to(work)
        var, mean = torch.var_mean(xw, dim=-1, unbiased=False, keepdim=True)
        normed = (xw - mean) / torch.sqrt(var + self.eps)
        y = self.alpha.to(work) * normed + self.bias.to(work)
        return y.to(out_dtype)


# ------------------------------------------------------------------------------------------------- feed forward


class FeedForwardBlock(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(d_model, d_ff, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout)
        self.linear_2 = nn.Linear(d_ff, d_model, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.dropout(F.relu(self.linear_1(x))))


# ---------------------------------------------------------------------------------------------------- attention


def _as_4d_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Bring a contract mask to 4-D so it broadcasts against ``[B, h, Lq, Lk]`` scores."""
    if mask is None:
        return None
    if mask.dim() == 3:
        if mask.shape[0] != 1:
            raise ValueError(
                f"a 3-D mask must be [1, Lq, Lk]; got {tuple(mask.shape)} (use [B, 1, Lq, Lk] for per-batch masks)")
        return mask.unsqueeze(1)
    if mask.dim() > 4:
        raise ValueError(f"mask must have at most 4 dimensions; got {tuple(mask.shape)}")
    return mask


class MultiHeadAttentionBlock(nn.Module):
    def __init__(self, d_model: int, h: int, dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
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
    def attention(query, key, value, mask, dropout):
        """``query [B, h, Lq, d_k]``, ``key``/``value [B, h, Lk, d_k]`` -> ``(out [B, h, Lq, d_k], weights)``."""
        out_dtype = query.dtype
        work = _compute_dtype(out_dtype)
        d_k = query.shape[-1]
        scores = torch.matmul(query.to(work), key.to(work).transpose(-2, -1)) * (1.0 / math.sqrt(d_k))
        mask = _as_4d_mask(mask)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if mask is not None:
            # A query whose every key is masked gives 0/0 = NaN: such rows attend to nothing.
            weights = torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)
        weights = weights.to(out_dtype)
        if dropout is not None:
            weights = dropout(weights)
        return torch.matmul(weights, value), weights

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.h, self.d_k).permute(0, 2, 1, 3)

    def forward(self, q, k, v, mask=None):
        query = self._split(self.w_q(q))
        key = self._split(self.w_k(k))
        value = self._split(self.w_v(v))
        out, self.attention_scores = MultiHeadAttentionBlock.attention(query, key, value, mask, self.dropout)
        batch, _, length, _ = out.shape
        out = out.permute(0, 2, 1, 3).reshape(batch, length, self.d_model)
        return self.w_o(out)


# ------------------------------------------------------------------------------------------------------- blocks


class ResidualConnection(nn.Module):
    def __init__(self, features: int, dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = LayerNormalization(features, device=device, dtype=dtype)

    def forward(self, x, sublayer):
        return x + self.dropout(sublayer(self.norm(x)))


class EncoderBlock(nn.Module):
    def __init__(self, features: int, self_attention_block: MultiHeadAttentionBlock,
                 feed_forward_block: FeedForwardBlock, dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.self_attention_block = self_attention_block
        self.feed_forward_block = feed_forward_block
        self.residual_connections = nn.ModuleList(
            ResidualConnection(features, dropout, device=device, dtype=dtype) for _ in range(2))

    def forward(self, x, src_mask=None):
        attend, feed = self.residual_connections
        x = attend(x, lambda y: self.self_attention_block(y, y, y, src_mask))
        return feed(x, self.feed_forward_block)


class Encoder(nn.Module):
    def __init__(self, features: int, layers, *, device=None, dtype=None) -> None:
        super().__init__()
        self.layers = layers if isinstance(layers, nn.ModuleList) else nn.ModuleList(layers)
        self.norm = LayerNormalization(features, device=device, dtype=dtype)

    def forward(self, x, mask=None):
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class DecoderBlock(nn.Module):
    def __init__(self, features: int, self_attention_block: MultiHeadAttentionBlock,
                 cross_attention_block: MultiHeadAttentionBlock, feed_forward_block: FeedForwardBlock,
                 dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.self_attention_block = self_attention_block
        self.cross_attention_block = cross_attention_block
        self.feed_forward_block = feed_forward_block
        self.residual_connections = nn.ModuleList(
            ResidualConnection(features, dropout, device=device, dtype=dtype) for _ in range(3))

    def forward(self, x, encoder_output, src_mask=None, tgt_mask=None):
        attend_self, attend_memory, feed = self.residual_connections
        x = attend_self(x, lambda y: self.self_attention_block(y, y, y, tgt_mask))
        x = attend_memory(x, lambda y: self.cross_attention_block(y, encoder_output, encoder_output, src_mask))
        return feed(x, self.feed_forward_block)


class Decoder(nn.Module):
    def __init__(self, features: int, layers, *, device=None, dtype=None) -> None:
        super().__init__()
        self.layers = layers if isinstance(layers, nn.ModuleList) else nn.ModuleList(layers)
        self.norm = LayerNormalization(features, device=device, dtype=dtype)

    def forward(self, x, encoder_output, src_mask=None, tgt_mask=None):
        for layer in self.layers:
            x = layer(x, encoder_output, src_mask, tgt_mask)
        return self.norm(x)


class ProjectionLayer(nn.Module):
    def __init__(self, d_model: int, vocab_size: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size, device=device, dtype=dtype)

    def forward(self, x):
        return self.proj(x)


# ------------------------------------------------------------------------------------------------------- model


class Transformer(nn.Module):
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

    def encode(self, src, src_mask=None):
        return self.encoder(self.src_pos(self.src_embed(src)), src_mask)

    def decode(self, encoder_output, src_mask, tgt, tgt_mask):
        return self.decoder(self.tgt_pos(self.tgt_embed(tgt)), encoder_output, src_mask, tgt_mask)

    def project(self, x):
        return self.projection_layer(x)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None):
        memory = self.encode(src, src_mask)
        return self.project(self.decode(memory, src_mask, tgt, tgt_mask))


def build_transformer(src_vocab_size: int, tgt_vocab_size: int, src_seq_len: int, tgt_seq_len: int,
                      d_model: int = 512, N: int = 6, h: int = 8, dropout: float = 0.1, d_ff: int = 2048,
                      *, device=None, dtype=None) -> Transformer:
    kw = {"device": device, "dtype": dtype}
    src_embed = InputEmbeddings(d_model, src_vocab_size, **kw)
    tgt_embed = InputEmbeddings(d_model, tgt_vocab_size, **kw)
    src_pos = PositionalEncoding(d_model, src_seq_len, dropout, **kw)
    tgt_pos = PositionalEncoding(d_model, tgt_seq_len, dropout, **kw)

    encoder_blocks = [
        EncoderBlock(d_model, MultiHeadAttentionBlock(d_model, h, dropout, **kw),
                     FeedForwardBlock(d_model, d_ff, dropout, **kw), dropout, **kw)
        for _ in range(N)
    ]
    decoder_blocks = [
        DecoderBlock(d_model, MultiHeadAttentionBlock(d_model, h, dropout, **kw),
                     MultiHeadAttentionBlock(d_model, h, dropout, **kw),
                     FeedForwardBlock(d_model, d_ff, dropout, **kw), dropout, **kw)
        for _ in range(N)
    ]
    model = Transformer(Encoder(d_model, nn.ModuleList(encoder_blocks), **kw),
                        Decoder(d_model, nn.ModuleList(decoder_blocks), **kw),
                        src_embed, tgt_embed, src_pos, tgt_pos, ProjectionLayer(d_model, tgt_vocab_size, **kw))
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
    return model


# -------------------------------------------------------------------------------------------------------- masks


def causal_mask(size: int, *, device=None) -> torch.Tensor:
    """``Bool[1, size, size]``, True on and below the diagonal."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril().unsqueeze(0)


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """``Bool[B, 1, 1, L]``, True where ``tokens != pad_id``."""
    return (tokens != pad_id).unsqueeze(1).unsqueeze(2)
