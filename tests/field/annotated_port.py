"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

The Annotated Transformer's names on the walkthrough's structure (separate embedding and position modules), its
``Generator`` returning logits. **Correct**: only renames, reorders and legal variants.

API differences: classes TokenEmbedding, SinusoidalPositionalEncoding, LayerNorm, PositionwiseFeedForward,
  MultiHeadedAttention, SublayerConnection, EncoderLayer, DecoderLayer, Generator, EncoderDecoder, make_model;
  arguments TokenEmbedding(d_model, vocab), SinusoidalPositionalEncoding(d_model, dropout, max_len=5000),
  MultiHeadedAttention(h, d_model, dropout), SublayerConnection(size, dropout), EncoderLayer(size, self_attn,
  feed_forward, dropout), DecoderLayer(size, self_attn, src_attn, feed_forward, dropout), Encoder(layers, size),
  Decoder(layers, size), EncoderDecoder(..., generator), make_model(src_vocab, tgt_vocab, src_seq_len, tgt_seq_len,
  N, d_model, d_ff, h, dropout); attributes lut, vocab, max_len, a_2/b_2, w_1/w_2, wq/wk/wv/wo, attn, self_attn,
  src_attn, feed_forward, sublayer, generator.
Legal variants: F.layer_norm; masked_fill(mask == 0, -inf) then nan_to_num (a fully masked row is zeros); 16-bit
  attention computed in float32 and cast back; heads merged with permute + reshape; the table in float64, cast once
  to the default dtype, odd d_model handled; Xavier through ``model.apply``.
Deviations: none. Bugs: none.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class TokenEmbedding(nn.Module):
    def __init__(self, d_model, vocab):
        super(TokenEmbedding, self).__init__()
        self.lut = nn.Embedding(vocab, d_model)
        self.d_model = d_model
        self.vocab = vocab

    def forward(self, x):
        return self.lut(x) * math.sqrt(self.d_model)


class SinusoidalPositionalEncoding(nn.Module):
    def __init__(self, d_model, dropout, max_len=5000):
        super(SinusoidalPositionalEncoding, self).__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(0, max_len, dtype=torch.float64).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * -(math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term[: d_model // 2])
        self.register_buffer("pe", pe.unsqueeze(0).to(torch.get_default_dtype()))

    def forward(self, x):
        return self.dropout(x + self.pe[:, : x.size(1)])


class LayerNorm(nn.Module):
    def __init__(self, features, eps=1e-6):
        super(LayerNorm, self).__init__()
        self.a_2 = nn.Parameter(torch.ones(features))
        self.b_2 = nn.Parameter(torch.zeros(features))
        self.features = features
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, (self.features,), self.a_2, self.b_2, self.eps)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.1):
        super(PositionwiseFeedForward, self).__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.w_2(self.dropout(self.w_1(x).relu()))


class MultiHeadedAttention(nn.Module):
    def __init__(self, h, d_model, dropout=0.1):
        super(MultiHeadedAttention, self).__init__()
        assert d_model % h == 0
        self.d_k, self.h, self.d_model = d_model // h, h, d_model
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d_model, d_model, bias=False) for _ in range(4))
        self.attn = None
        self.dropout = nn.Dropout(p=dropout)

    @staticmethod
    def attention(query, key, value, mask=None, dropout=None):
        "Compute 'Scaled Dot Product Attention' (in float32 for 16-bit inputs)."
        out_dtype = query.dtype
        if out_dtype in (torch.float16, torch.bfloat16):
            query, key, value = query.float(), key.float(), value.float()
        d_k = query.size(-1)
        scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, float("-inf"))
        p_attn = torch.nan_to_num(scores.softmax(dim=-1), nan=0.0)  # a row with nothing to see: zeros, not NaN
        if dropout is not None:
            p_attn = dropout(p_attn)
        return torch.matmul(p_attn, value).to(out_dtype), p_attn.to(out_dtype)

    def forward(self, query, key, value, mask=None):
        nbatches = query.size(0)
        query, key, value = [
            lin(x).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)
            for lin, x in zip((self.wq, self.wk, self.wv), (query, key, value))
        ]
        x, self.attn = MultiHeadedAttention.attention(query, key, value, mask=mask, dropout=self.dropout)
        x = x.permute(0, 2, 1, 3).reshape(nbatches, -1, self.h * self.d_k)
        return self.wo(x)


class SublayerConnection(nn.Module):
    def __init__(self, size, dropout):
        super(SublayerConnection, self).__init__()
        self.norm = LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, sublayer):
        return x + self.dropout(sublayer(self.norm(x)))


class EncoderLayer(nn.Module):
    def __init__(self, size, self_attn, feed_forward, dropout):
        super(EncoderLayer, self).__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.sublayer = nn.ModuleList([SublayerConnection(size, dropout) for _ in range(2)])

    def forward(self, x, mask):
        x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, mask))
        return self.sublayer[1](x, self.feed_forward)


class Encoder(nn.Module):
    def __init__(self, layers, size):
        super(Encoder, self).__init__()
        self.layers = layers
        self.norm = LayerNorm(size)

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class DecoderLayer(nn.Module):
    def __init__(self, size, self_attn, src_attn, feed_forward, dropout):
        super(DecoderLayer, self).__init__()
        self.self_attn = self_attn
        self.src_attn = src_attn
        self.feed_forward = feed_forward
        self.sublayer = nn.ModuleList([SublayerConnection(size, dropout) for _ in range(3)])

    def forward(self, x, memory, src_mask, tgt_mask):
        m = memory
        x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, tgt_mask))
        x = self.sublayer[1](x, lambda x: self.src_attn(x, m, m, src_mask))
        return self.sublayer[2](x, self.feed_forward)


class Decoder(nn.Module):
    def __init__(self, layers, size):
        super(Decoder, self).__init__()
        self.layers = layers
        self.norm = LayerNorm(size)

    def forward(self, x, memory, src_mask, tgt_mask):
        for layer in self.layers:
            x = layer(x, memory, src_mask, tgt_mask)
        return self.norm(x)


class Generator(nn.Module):
    "Linear step to the vocabulary: logits (the loss applies the log-softmax)."

    def __init__(self, d_model, vocab):
        super(Generator, self).__init__()
        self.proj = nn.Linear(d_model, vocab)

    def forward(self, x):
        return self.proj(x)


class EncoderDecoder(nn.Module):
    def __init__(self, encoder, decoder, src_embed, tgt_embed, src_pos, tgt_pos, generator):
        super(EncoderDecoder, self).__init__()
        self.encoder, self.decoder = encoder, decoder
        self.src_embed, self.tgt_embed, self.src_pos, self.tgt_pos = src_embed, tgt_embed, src_pos, tgt_pos
        self.generator = generator

    def encode(self, src, src_mask):
        return self.encoder(self.src_pos(self.src_embed(src)), src_mask)

    def decode(self, memory, src_mask, tgt, tgt_mask):
        return self.decoder(self.tgt_pos(self.tgt_embed(tgt)), memory, src_mask, tgt_mask)

    def project(self, x):
        return self.generator(x)


def make_model(src_vocab, tgt_vocab, src_seq_len, tgt_seq_len, N=6, d_model=512, d_ff=2048, h=8, dropout=0.1):
    "Helper: construct a model from hyperparameters."
    attn = lambda: MultiHeadedAttention(h, d_model, dropout)  # noqa: E731
    ff = lambda: PositionwiseFeedForward(d_model, d_ff, dropout)  # noqa: E731
    model = EncoderDecoder(
        Encoder(nn.ModuleList([EncoderLayer(d_model, attn(), ff(), dropout) for _ in range(N)]), d_model),
        Decoder(nn.ModuleList([DecoderLayer(d_model, attn(), attn(), ff(), dropout) for _ in range(N)]), d_model),
        TokenEmbedding(d_model, src_vocab), TokenEmbedding(d_model, tgt_vocab),
        SinusoidalPositionalEncoding(d_model, dropout, src_seq_len),
        SinusoidalPositionalEncoding(d_model, dropout, tgt_seq_len),
        Generator(d_model, tgt_vocab))

    def init_weights(module):
        for p in module.parameters(recurse=False):
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    model.apply(init_weights)
    return model
