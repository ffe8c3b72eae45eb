"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

Written while pausing the video: British spelling for the norm, the newer ``features`` signature pasted over the
older scalar-gain body, functional dropout in the feed-forward, ``d_ff``/``dropout`` swapped in the builder.

API differences: class LayerNormalisation; FeedForwardBlock keeps its rate in ``p_drop`` (a float, no nn.Dropout);
  attribute residual_connection (singular) on the blocks; build_transformer(..., d_model, N, h, d_ff, dropout)
  (the last two reordered).
Legal variants: nn.Linear with bias on w_q/w_k/w_v/w_o; in-place masked_fill_; torch.softmax; heads split with
  reshape + transpose.
Deviations: scalar LayerNorm gain/shift (torch.ones(1) / torch.zeros(1)) though ``features`` is taken; no
  nn.Dropout in FeedForwardBlock; masked_fill_(mask == 0, float('-inf')) without a NaN clean-up (a fully masked
  row is NaN); an odd d_model fails in pe[:, 1::2] = sin(...); no float32 upcast for 16-bit inputs.
Bugs:
  * positional table with cos on the even columns and sin on the odd ones;
  * FeedForwardBlock uses F.dropout(x, p) whose training flag defaults to True: dropout also in eval mode.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class InputEmbeddings(nn.Module):
    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, seq_len: int, dropout: float) -> None:
        super().__init__()
        self.d_model = d_model
        self.seq_len = seq_len
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(seq_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(seq_len, d_model)
        pe[:, 0::2] = torch.cos(position * div_term)
        pe[:, 1::2] = torch.sin(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1], :].requires_grad_(False))


class LayerNormalisation(nn.Module):
    def __init__(self, features: int, eps: float = 10**-6) -> None:
        super().__init__()
        self.features = features
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.alpha * (x - mean) / torch.sqrt(var + self.eps) + self.bias


class FeedForwardBlock(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(d_model, d_ff)
        self.linear_2 = nn.Linear(d_ff, d_model)
        self.p_drop = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.dropout(torch.relu(self.linear_1(x)), p=self.p_drop))


class MultiHeadAttentionBlock(nn.Module):
    def __init__(self, d_model: int, h: int, dropout: float) -> None:
        super().__init__()
        self.d_model = d_model
        self.h = h
        assert d_model % h == 0, "d_model is not divisible by h"
        self.d_k = d_model // h
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(d_model, d_model) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def attention(query, key, value, mask, dropout: nn.Dropout):
        d_k = query.shape[-1]
        attention_scores = (query @ key.transpose(-2, -1)) / math.sqrt(d_k)
        if mask is not None:
            attention_scores.masked_fill_(mask == 0, float("-inf"))
        attention_scores = torch.softmax(attention_scores, dim=-1)
        if dropout is not None:
            attention_scores = dropout(attention_scores)
        return attention_scores @ value, attention_scores

    def forward(self, q, k, v, mask):
        batch = q.shape[0]
        query = self.w_q(q).reshape(batch, -1, self.h, self.d_k).transpose(1, 2)
        key = self.w_k(k).reshape(batch, -1, self.h, self.d_k).transpose(1, 2)
        value = self.w_v(v).reshape(batch, -1, self.h, self.d_k).transpose(1, 2)
        x, self.attention_scores = MultiHeadAttentionBlock.attention(query, key, value, mask, self.dropout)
        x = x.transpose(1, 2).contiguous().view(batch, -1, self.h * self.d_k)
        return self.w_o(x)


class ResidualConnection(nn.Module):
    def __init__(self, features: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = LayerNormalisation(features)

    def forward(self, x, sublayer):
        return x + self.dropout(sublayer(self.norm(x)))


class EncoderBlock(nn.Module):
    def __init__(self, features: int, self_attention_block: MultiHeadAttentionBlock,
                 feed_forward_block: FeedForwardBlock, dropout: float) -> None:
        super().__init__()
        self.self_attention_block = self_attention_block
        self.feed_forward_block = feed_forward_block
        self.residual_connection = nn.ModuleList([ResidualConnection(features, dropout) for _ in range(2)])

    def forward(self, x, src_mask):
        x = self.residual_connection[0](x, lambda x: self.self_attention_block(x, x, x, src_mask))
        return self.residual_connection[1](x, self.feed_forward_block)


class Encoder(nn.Module):
    def __init__(self, features: int, layers: nn.ModuleList) -> None:
        super().__init__()
        self.layers = layers
        self.norm = LayerNormalisation(features)

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class DecoderBlock(nn.Module):
    def __init__(self, features: int, self_attention_block: MultiHeadAttentionBlock,
                 cross_attention_block: MultiHeadAttentionBlock, feed_forward_block: FeedForwardBlock,
                 dropout: float) -> None:
        super().__init__()
        self.self_attention_block = self_attention_block
        self.cross_attention_block = cross_attention_block
        self.feed_forward_block = feed_forward_block
        self.residual_connection = nn.ModuleList([ResidualConnection(features, dropout) for _ in range(3)])

    def forward(self, x, encoder_output, src_mask, tgt_mask):
        x = self.residual_connection[0](x, lambda x: self.self_attention_block(x, x, x, tgt_mask))
        x = self.residual_connection[1](
            x, lambda x: self.cross_attention_block(x, encoder_output, encoder_output, src_mask))
        return self.residual_connection[2](x, self.feed_forward_block)


class Decoder(nn.Module):
    def __init__(self, features: int, layers: nn.ModuleList) -> None:
        super().__init__()
        self.layers = layers
        self.norm = LayerNormalisation(features)

    def forward(self, x, encoder_output, src_mask, tgt_mask):
        for layer in self.layers:
            x = layer(x, encoder_output, src_mask, tgt_mask)
        return self.norm(x)


class ProjectionLayer(nn.Module):
    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x):
        return self.proj(x)


class Transformer(nn.Module):
    def __init__(self, encoder, decoder, src_embed, tgt_embed, src_pos, tgt_pos, projection_layer) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.src_embed, self.tgt_embed = src_embed, tgt_embed
        self.src_pos, self.tgt_pos = src_pos, tgt_pos
        self.projection_layer = projection_layer

    def encode(self, src, src_mask):
        return self.encoder(self.src_pos(self.src_embed(src)), src_mask)

    def decode(self, encoder_output, src_mask, tgt, tgt_mask):
        return self.decoder(self.tgt_pos(self.tgt_embed(tgt)), encoder_output, src_mask, tgt_mask)

    def project(self, x):
        return self.projection_layer(x)


def build_transformer(src_vocab_size: int, tgt_vocab_size: int, src_seq_len: int, tgt_seq_len: int,
                      d_model: int = 512, N: int = 6, h: int = 8, d_ff: int = 2048, dropout: float = 0.1):
    encoder_blocks, decoder_blocks = [], []
    for _ in range(N):
        encoder_blocks.append(EncoderBlock(d_model, MultiHeadAttentionBlock(d_model, h, dropout),
                                           FeedForwardBlock(d_model, d_ff, dropout), dropout))
    for _ in range(N):
        decoder_blocks.append(DecoderBlock(d_model, MultiHeadAttentionBlock(d_model, h, dropout),
                                           MultiHeadAttentionBlock(d_model, h, dropout),
                                           FeedForwardBlock(d_model, d_ff, dropout), dropout))
    transformer = Transformer(Encoder(d_model, nn.ModuleList(encoder_blocks)),
                              Decoder(d_model, nn.ModuleList(decoder_blocks)),
                              InputEmbeddings(d_model, src_vocab_size), InputEmbeddings(d_model, tgt_vocab_size),
                              PositionalEncoding(d_model, src_seq_len, dropout),
                              PositionalEncoding(d_model, tgt_seq_len, dropout),
                              ProjectionLayer(d_model, tgt_vocab_size))
    for p in transformer.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return transformer
