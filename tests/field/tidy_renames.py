"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

A careful learner's rewrite: typed, documented, names chosen to read well (``EncoderLayer``, ``self_attn``,
``blocks``, ``source_embed``), float16/bfloat16 handled as PyTorch's kernels do. **Correct**: only renames,
reorders and legal variants.

API differences: classes MultiHeadAttention, EncoderLayer, DecoderLayer; MultiHeadAttention(d_model, dropout, h)
  (reordered); EncoderLayer(features, self_attn, feed_forward, dropout); DecoderLayer(features, self_attn,
  cross_attn, feed_forward, dropout); Transformer(encoder, decoder, source_embed, target_embed, source_pos,
  target_pos, projection_layer); attributes self_attn/cross_attn/feed_forward/residuals on the layers,
  blocks/norm_layer on the stacks, attention_weights on the attention.
Legal variants: nn.Linear with bias on w_q/w_k/w_v/w_o; torch.softmax; masked_fill with torch.finfo(dtype).min
  (a fully masked row gets uniform, finite weights); 16-bit attention and LayerNorm computed in float32 and cast
  back; the table computed in float64 and cast once to the default dtype, odd d_model handled.
Deviations: none. Bugs: none.
"""

import math

import torch
import torch.nn as nn

_HALF = (torch.float16, torch.bfloat16)


class InputEmbeddings(nn.Module):
    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.d_model = d_model
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, seq_len: int, dropout: float):
        super().__init__()
        self.d_model = d_model
        self.seq_len = seq_len
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)  # (L, 1)
        inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (ceil(d/2),)
        angles = position * inv_freq  # (L, ceil(d/2))
        table = torch.zeros(seq_len, d_model, dtype=torch.float64)
        table[:, 0::2] = torch.sin(angles)
        table[:, 1::2] = torch.cos(angles[:, : d_model // 2])  # an odd d_model has one sine column more
        self.register_buffer("pe", table.unsqueeze(0).to(torch.get_default_dtype()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1]])


class LayerNormalization(nn.Module):
    """alpha * (x - mean) / sqrt(var + eps) + bias over the last dim (biased variance)."""

    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in _HALF else x  # normalise 16-bit inputs in float32
        mean, var = xf.mean(dim=-1, keepdim=True), xf.var(dim=-1, keepdim=True, unbiased=False)
        return (self.alpha * ((xf - mean) / torch.sqrt(var + self.eps)) + self.bias).to(x.dtype)


class FeedForwardBlock(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.linear_1 = nn.Linear(d_model, d_ff)
        self.dropout = nn.Dropout(dropout)
        self.linear_2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.dropout(torch.relu(self.linear_1(x))))


class MultiHeadAttention(nn.Module):
    """h heads of scaled dot-product attention over d_k = d_model / h slices of the projections."""

    def __init__(self, d_model: int, dropout: float, h: int):
        super().__init__()
        if d_model % h:
            raise ValueError(f"d_model={d_model} is not a multiple of h={h}")
        self.d_model, self.h, self.d_k = d_model, h, d_model // h
        self.w_q, self.w_k = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)  # with biases
        self.w_v, self.w_o = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.attention_weights = None

    @staticmethod
    def attention(query, key, value, mask, dropout):
        dtype = query.dtype
        if dtype in _HALF:  # attend in float32, as the fused kernels do
            query, key, value = query.float(), key.float(), value.float()
        scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(mask == 0, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        if dropout is not None:
            weights = dropout(weights)
        return (weights @ value).to(dtype), weights.to(dtype)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.h, self.d_k).transpose(1, 2)

    def forward(self, q, k, v, mask=None):
        query, key, value = self._heads(self.w_q(q)), self._heads(self.w_k(k)), self._heads(self.w_v(v))
        x, self.attention_weights = MultiHeadAttention.attention(query, key, value, mask, self.dropout)
        x = x.transpose(1, 2).contiguous().view(q.shape[0], q.shape[1], self.d_model)
        return self.w_o(x)


class ResidualConnection(nn.Module):
    def __init__(self, features: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = LayerNormalization(features)

    def forward(self, x, sublayer):
        return x + self.dropout(sublayer(self.norm(x)))


class EncoderLayer(nn.Module):
    def __init__(self, features: int, self_attn: MultiHeadAttention, feed_forward: FeedForwardBlock, dropout: float):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.residuals = nn.ModuleList([ResidualConnection(features, dropout) for _ in range(2)])

    def forward(self, x, src_mask):
        x = self.residuals[0](x, lambda y: self.self_attn(y, y, y, src_mask))
        return self.residuals[1](x, self.feed_forward)


class Encoder(nn.Module):
    def __init__(self, features: int, blocks: nn.ModuleList):
        super().__init__()
        self.blocks = blocks
        self.norm_layer = LayerNormalization(features)

    def forward(self, x, mask):
        for block in self.blocks:
            x = block(x, mask)
        return self.norm_layer(x)


class DecoderLayer(nn.Module):
    def __init__(self, features: int, self_attn: MultiHeadAttention, cross_attn: MultiHeadAttention,
                 feed_forward: FeedForwardBlock, dropout: float):
        super().__init__()
        self.self_attn = self_attn
        self.cross_attn = cross_attn
        self.feed_forward = feed_forward
        self.residuals = nn.ModuleList([ResidualConnection(features, dropout) for _ in range(3)])

    def forward(self, x, memory, src_mask, tgt_mask):
        x = self.residuals[0](x, lambda y: self.self_attn(y, y, y, tgt_mask))
        x = self.residuals[1](x, lambda y: self.cross_attn(y, memory, memory, src_mask))
        return self.residuals[2](x, self.feed_forward)


class Decoder(nn.Module):
    def __init__(self, features: int, blocks: nn.ModuleList):
        super().__init__()
        self.blocks = blocks
        self.norm_layer = LayerNormalization(features)

    def forward(self, x, memory, src_mask, tgt_mask):
        for block in self.blocks:
            x = block(x, memory, src_mask, tgt_mask)
        return self.norm_layer(x)


class ProjectionLayer(nn.Module):
    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x):
        return self.proj(x)


class Transformer(nn.Module):
    def __init__(self, encoder, decoder, source_embed, target_embed, source_pos, target_pos, projection_layer):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.source_embed, self.target_embed = source_embed, target_embed
        self.source_pos, self.target_pos = source_pos, target_pos
        self.projection_layer = projection_layer

    def encode(self, src, src_mask):
        return self.encoder(self.source_pos(self.source_embed(src)), src_mask)

    def decode(self, encoder_output, src_mask, tgt, tgt_mask):
        return self.decoder(self.target_pos(self.target_embed(tgt)), encoder_output, src_mask, tgt_mask)

    def project(self, x):
        return self.projection_layer(x)


def build_transformer(src_vocab_size: int, tgt_vocab_size: int, src_seq_len: int, tgt_seq_len: int,
                      d_model: int = 512, N: int = 6, h: int = 8, dropout: float = 0.1, d_ff: int = 2048):
    def mha():
        return MultiHeadAttention(d_model, dropout, h)
    encoder = Encoder(d_model, nn.ModuleList(
        [EncoderLayer(d_model, mha(), FeedForwardBlock(d_model, d_ff, dropout), dropout) for _ in range(N)]))
    decoder = Decoder(d_model, nn.ModuleList(
        [DecoderLayer(d_model, mha(), mha(), FeedForwardBlock(d_model, d_ff, dropout), dropout) for _ in range(N)]))
    model = Transformer(encoder, decoder, InputEmbeddings(d_model, src_vocab_size),
                        InputEmbeddings(d_model, tgt_vocab_size), PositionalEncoding(d_model, src_seq_len, dropout),
                        PositionalEncoding(d_model, tgt_seq_len, dropout), ProjectionLayer(d_model, tgt_vocab_size))
    for p in model.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return model
