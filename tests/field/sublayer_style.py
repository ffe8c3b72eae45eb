"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

The walkthrough's classes with the Annotated Transformer's vocabulary mixed in: ``SublayerConnection(size,
dropout)``, a ``generator`` at the top, ``weight``/``bias`` on the norm as ``nn.LayerNorm`` names them, and the
positional table kept in a buffer called ``encoding``.

API differences: classes LayerNorm, SublayerConnection; LayerNorm(size, eps); SublayerConnection(size, dropout);
  ``size`` for ``features`` in the blocks and stacks; attributes encoding (the ``pe`` buffer), weight (``alpha``),
  linear (``proj``), sublayers (``residual_connections``), src_pe/tgt_pe/generator on the Transformer, whose
  constructor takes (encoder, decoder, src_embed, tgt_embed, src_pe, tgt_pe, generator).
Legal variants: torch.rsqrt; variance as ((x - mean) ** 2).mean(); masked_fill with torch.finfo(dtype).min; the
  positional table in the default dtype with an odd d_model handled; F.softmax.
Deviations: no float32 upcast for 16-bit inputs.
Bugs:
  * post-norm residual: norm(x + dropout(sublayer(x))) instead of x + dropout(sublayer(norm(x))).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class InputEmbeddings(nn.Module):
    def __init__(self, d_model, vocab_size):
        super().__init__()
        self.d_model, self.vocab_size = d_model, vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model)

    def forward(self, x):
        return self.embedding(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, seq_len, dropout):
        super().__init__()
        self.d_model, self.seq_len = d_model, seq_len
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(seq_len).unsqueeze(1)
        two_i = torch.arange(0, d_model, 2)
        angles = position / (10000 ** (two_i / d_model))  # (seq_len, ceil(d_model / 2))
        encoding = torch.zeros(seq_len, d_model)
        encoding[:, 0::2] = torch.sin(angles)
        encoding[:, 1::2] = torch.cos(angles)[:, : d_model // 2]
        self.register_buffer("encoding", encoding.unsqueeze(0))

    def forward(self, x):
        return self.dropout(x + self.encoding[:, : x.size(1)])


class LayerNorm(nn.Module):
    def __init__(self, size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return self.weight * (x - mean) * torch.rsqrt(var + self.eps) + self.bias


class FeedForwardBlock(nn.Module):
    def __init__(self, d_model, d_ff, dropout):
        super().__init__()
        self.linear_1 = nn.Linear(d_model, d_ff)
        self.linear_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.linear_2(self.dropout(F.relu(self.linear_1(x))))


class MultiHeadAttentionBlock(nn.Module):
    def __init__(self, d_model, h, dropout):
        super().__init__()
        assert d_model % h == 0
        self.d_model, self.h, self.d_k = d_model, h, d_model // h
        self.w_q = nn.Linear(d_model, d_model, bias=False)
        self.w_k = nn.Linear(d_model, d_model, bias=False)
        self.w_v = nn.Linear(d_model, d_model, bias=False)
        self.w_o = nn.Linear(d_model, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.attention_scores = None

    @staticmethod
    def attention(query, key, value, mask, dropout):
        scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(mask == 0, torch.finfo(scores.dtype).min)
        probs = F.softmax(scores, dim=-1)
        if dropout is not None:
            probs = dropout(probs)
        return probs @ value, probs

    def forward(self, q, k, v, mask):
        B, Lq, Lk = q.shape[0], q.shape[1], k.shape[1]
        query = self.w_q(q).view(B, Lq, self.h, self.d_k).transpose(1, 2)
        key = self.w_k(k).view(B, Lk, self.h, self.d_k).transpose(1, 2)
        value = self.w_v(v).view(B, Lk, self.h, self.d_k).transpose(1, 2)
        x, self.attention_scores = self.attention(query, key, value, mask, self.dropout)
        return self.w_o(x.transpose(1, 2).reshape(B, Lq, self.d_model))


class SublayerConnection(nn.Module):
    """A residual connection followed by a layer norm."""

    def __init__(self, size, dropout):
        super().__init__()
        self.norm = LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, sublayer):
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderBlock(nn.Module):
    def __init__(self, size, self_attention_block, feed_forward_block, dropout):
        super().__init__()
        self.self_attention_block = self_attention_block
        self.feed_forward_block = feed_forward_block
        self.sublayers = nn.ModuleList([SublayerConnection(size, dropout) for _ in range(2)])

    def forward(self, x, src_mask):
        x = self.sublayers[0](x, lambda x: self.self_attention_block(x, x, x, src_mask))
        return self.sublayers[1](x, self.feed_forward_block)


class Encoder(nn.Module):
    def __init__(self, size, layers):
        super().__init__()
        self.layers = layers
        self.norm = LayerNorm(size)

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class DecoderBlock(nn.Module):
    def __init__(self, size, self_attention_block, cross_attention_block, feed_forward_block, dropout):
        super().__init__()
        self.self_attention_block = self_attention_block
        self.cross_attention_block = cross_attention_block
        self.feed_forward_block = feed_forward_block
        self.sublayers = nn.ModuleList([SublayerConnection(size, dropout) for _ in range(3)])

    def forward(self, x, encoder_output, src_mask, tgt_mask):
        m = encoder_output
        x = self.sublayers[0](x, lambda x: self.self_attention_block(x, x, x, tgt_mask))
        x = self.sublayers[1](x, lambda x: self.cross_attention_block(x, m, m, src_mask))
        return self.sublayers[2](x, self.feed_forward_block)


class Decoder(nn.Module):
    def __init__(self, size, layers):
        super().__init__()
        self.layers = layers
        self.norm = LayerNorm(size)

    def forward(self, x, encoder_output, src_mask, tgt_mask):
        for layer in self.layers:
            x = layer(x, encoder_output, src_mask, tgt_mask)
        return self.norm(x)


class ProjectionLayer(nn.Module):
    def __init__(self, d_model, vocab_size):
        super().__init__()
        self.linear = nn.Linear(d_model, vocab_size)

    def forward(self, x):
        return self.linear(x)


class Transformer(nn.Module):
    def __init__(self, encoder, decoder, src_embed, tgt_embed, src_pe, tgt_pe, generator):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.src_embed = src_embed
        self.tgt_embed = tgt_embed
        self.src_pe = src_pe
        self.tgt_pe = tgt_pe
        self.generator = generator

    def encode(self, src, src_mask):
        return self.encoder(self.src_pe(self.src_embed(src)), src_mask)

    def decode(self, encoder_output, src_mask, tgt, tgt_mask):
        return self.decoder(self.tgt_pe(self.tgt_embed(tgt)), encoder_output, src_mask, tgt_mask)

    def project(self, x):
        return self.generator(x)


def build_transformer(src_vocab_size, tgt_vocab_size, src_seq_len, tgt_seq_len, d_model=512, N=6, h=8, dropout=0.1,
                      d_ff=2048):
    def attn():
        return MultiHeadAttentionBlock(d_model, h, dropout)

    def ff():
        return FeedForwardBlock(d_model, d_ff, dropout)

    encoder = Encoder(d_model, nn.ModuleList([EncoderBlock(d_model, attn(), ff(), dropout) for _ in range(N)]))
    decoder = Decoder(d_model, nn.ModuleList([DecoderBlock(d_model, attn(), attn(), ff(), dropout) for _ in range(N)]))
    model = Transformer(encoder, decoder, InputEmbeddings(d_model, src_vocab_size),
                        InputEmbeddings(d_model, tgt_vocab_size), PositionalEncoding(d_model, src_seq_len, dropout),
                        PositionalEncoding(d_model, tgt_seq_len, dropout), ProjectionLayer(d_model, tgt_vocab_size))
    for p in model.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return model
