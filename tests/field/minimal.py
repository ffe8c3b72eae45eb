"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

A terse rewrite that fits on a few screens: short class and attribute names (``MHA``, ``FFN``, ``l1``, ``drop``,
``res``), the early walkthrough's norm without ``features``, one list for the encoder's layers built by repetition.

API differences: classes TokenEmbeddings, LayerNorm, FFN, MHA, Residual, Projection; no ``features`` argument on
  LayerNorm(eps), Residual(dropout), EncoderBlock(attn, ff, dropout), Encoder(layers), DecoderBlock(self_attn,
  cross_attn, ff, dropout), Decoder(layers); attributes emb, drop (every dropout), l1/l2, scores, attn/self_attn/
  cross_attn/ff/res on the blocks.
Legal variants: torch.softmax; ``x.var(unbiased=False)``; in-place ``masked_fill_``.
Deviations: scalar LayerNorm gain and shift (torch.ones(1) / torch.zeros(1)); masked_fill_(mask == 0, -inf) without
  a NaN clean-up (a fully masked query row is NaN); an odd d_model fails in pe[:, 1::2] = cos(...); no float32
  upcast for 16-bit inputs.
Bugs:
  * values projected from the key input, w_v(k) instead of w_v(v): the model always passes k and v equal, so only
    a block called with distinct k and v shows it;
  * build_transformer repeats one encoder block N times (``[EncoderBlock(...)] * N``): the N layers share weights.
"""

import math

import torch
import torch.nn as nn


class TokenEmbeddings(nn.Module):
    def __init__(self, d_model, vocab_size):
        super().__init__()
        self.d_model, self.vocab_size = d_model, vocab_size
        self.emb = nn.Embedding(vocab_size, d_model)

    def forward(self, x):
        return self.emb(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, seq_len, dropout):
        super().__init__()
        self.d_model, self.seq_len = d_model, seq_len
        self.drop = nn.Dropout(dropout)
        ang = torch.arange(seq_len)[:, None] * torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(seq_len, d_model)
        pe[:, 0::2], pe[:, 1::2] = ang.sin(), ang.cos()
        self.register_buffer("pe", pe[None])

    def forward(self, x):
        return self.drop(x + self.pe[:, : x.shape[1]])


class LayerNorm(nn.Module):
    def __init__(self, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        m, v = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
        return self.alpha * (x - m) / torch.sqrt(v + self.eps) + self.bias


class FFN(nn.Module):
    def __init__(self, d_model, d_ff, dropout):
        super().__init__()
        self.l1, self.drop, self.l2 = nn.Linear(d_model, d_ff), nn.Dropout(dropout), nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.l2(self.drop(torch.relu(self.l1(x))))


class MHA(nn.Module):
    def __init__(self, d_model, h, dropout):
        super().__init__()
        assert d_model % h == 0
        self.d_model, self.h, self.d_k = d_model, h, d_model // h
        self.w_q = nn.Linear(d_model, d_model, bias=False)
        self.w_k = nn.Linear(d_model, d_model, bias=False)
        self.w_v = nn.Linear(d_model, d_model, bias=False)
        self.w_o = nn.Linear(d_model, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    @staticmethod
    def attention(q, k, v, mask, dropout):
        s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            s.masked_fill_(mask == 0, float("-inf"))
        p = torch.softmax(s, dim=-1)
        if dropout is not None:
            p = dropout(p)
        return p @ v, p

    def forward(self, q, k, v, mask):
        B = q.shape[0]
        split = lambda t: t.view(B, -1, self.h, self.d_k).transpose(1, 2)  # noqa: E731
        x, self.scores = MHA.attention(split(self.w_q(q)), split(self.w_k(k)), split(self.w_v(k)), mask, self.drop)
        return self.w_o(x.transpose(1, 2).contiguous().view(B, -1, self.d_model))


class Residual(nn.Module):
    def __init__(self, dropout):
        super().__init__()
        self.drop, self.norm = nn.Dropout(dropout), LayerNorm()

    def forward(self, x, f):
        return x + self.drop(f(self.norm(x)))


class EncoderBlock(nn.Module):
    def __init__(self, attn, ff, dropout):
        super().__init__()
        self.attn, self.ff = attn, ff
        self.res = nn.ModuleList([Residual(dropout), Residual(dropout)])

    def forward(self, x, mask):
        x = self.res[0](x, lambda t: self.attn(t, t, t, mask))
        return self.res[1](x, self.ff)


class Encoder(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers, self.norm = layers, LayerNorm()

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class DecoderBlock(nn.Module):
    def __init__(self, self_attn, cross_attn, ff, dropout):
        super().__init__()
        self.self_attn, self.cross_attn, self.ff = self_attn, cross_attn, ff
        self.res = nn.ModuleList([Residual(dropout) for _ in range(3)])

    def forward(self, x, enc, src_mask, tgt_mask):
        x = self.res[0](x, lambda t: self.self_attn(t, t, t, tgt_mask))
        x = self.res[1](x, lambda t: self.cross_attn(t, enc, enc, src_mask))
        return self.res[2](x, self.ff)


class Decoder(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers, self.norm = layers, LayerNorm()

    def forward(self, x, enc, src_mask, tgt_mask):
        for layer in self.layers:
            x = layer(x, enc, src_mask, tgt_mask)
        return self.norm(x)


class Projection(nn.Module):
    def __init__(self, d_model, vocab_size):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x):
        return self.proj(x)


class Transformer(nn.Module):
    def __init__(self, encoder, decoder, src_embed, tgt_embed, src_pos, tgt_pos, projection_layer):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.src_embed, self.tgt_embed, self.src_pos, self.tgt_pos = src_embed, tgt_embed, src_pos, tgt_pos
        self.projection_layer = projection_layer

    def encode(self, src, src_mask):
        return self.encoder(self.src_pos(self.src_embed(src)), src_mask)

    def decode(self, enc, src_mask, tgt, tgt_mask):
        return self.decoder(self.tgt_pos(self.tgt_embed(tgt)), enc, src_mask, tgt_mask)

    def project(self, x):
        return self.projection_layer(x)


def build_transformer(src_vocab_size, tgt_vocab_size, src_seq_len, tgt_seq_len, d_model=512, N=6, h=8, dropout=0.1,
                      d_ff=2048):
    encoder = Encoder(nn.ModuleList([EncoderBlock(MHA(d_model, h, dropout), FFN(d_model, d_ff, dropout), dropout)] * N))
    decoder = Decoder(nn.ModuleList([DecoderBlock(MHA(d_model, h, dropout), MHA(d_model, h, dropout),
                                                  FFN(d_model, d_ff, dropout), dropout) for _ in range(N)]))
    model = Transformer(encoder, decoder, TokenEmbeddings(d_model, src_vocab_size),
                        TokenEmbeddings(d_model, tgt_vocab_size), PositionalEncoding(d_model, src_seq_len, dropout),
                        PositionalEncoding(d_model, tgt_seq_len, dropout), Projection(d_model, tgt_vocab_size))
    for p in model.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return model
