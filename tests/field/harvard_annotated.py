"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

The shape of the Annotated Transformer (harvardnlp/annotated-transformer), written from scratch in its style: it
differs from the walkthrough in structure, not only in names.

Shape: ``EncoderDecoder(encoder, decoder, src_embed, tgt_embed, generator)`` where ``src_embed``/``tgt_embed`` are
  ``nn.Sequential(Embeddings, PositionalEncoding)`` (no ``src_pos``/``tgt_pos``), ``encode``/``decode`` but no
  ``project`` (the caller applies ``model.generator``); ``Encoder(layer, N)``/``Decoder(layer, N)`` deep-copy one
  layer N times with ``clones`` and size their final norm from ``layer.size``; the four projections are one
  ``self.linears = clones(nn.Linear(d_model, d_model), 4)`` (q, k, v, out); the scaled dot-product attention is the
  module-level function ``attention(query, key, value, mask=None, dropout=None) -> (output, p_attn)``; masks come
  without the head dimension (``[B, 1, Lk]`` padding, ``[B, Lq, Lk]`` or ``[1, L, L]`` causal, as
  ``subsequent_mask`` makes them) and ``MultiHeadedAttention.forward`` adds it (``mask.unsqueeze(1)``);
  ``SublayerConnection(size, dropout)`` pre-norm, ``EncoderLayer(size, self_attn, feed_forward, dropout)`` with
  ``self.sublayer = clones(SublayerConnection(size, dropout), 2)``; ``make_model(src_vocab, tgt_vocab, N=6,
  d_model=512, d_ff=2048, h=8, dropout=0.1)`` takes no sequence lengths (a 5000-position table).
What it gets right: the embedding scale, the sinusoid (in the default dtype, int positions times
  ``exp(-log(10000) 2i/d)``), the pre-norm residual, the attention formula and head split/merge, the
  feed-forward, the stacks' final norms, Xavier on every matrix.
Deviations (the real code's): ``masked_fill(mask == 0, -1e9)`` in the scores' dtype (float16 raises on the fill,
  numerics.16bit-range); no float32 upcast for 16-bit inputs (numerics.16bit-accuracy); the table's
  ``pe[:, 1::2] = cos(position * div_term)`` has ceil(d/2) columns, so an odd ``d_model`` raises at construction
  (pe.formula; kept: it is the published code's behaviour, and the other field files catalogue it the same way);
  ``Embeddings`` keeps no ``vocab``, ``PositionalEncoding`` no ``d_model``/``max_len``, ``MultiHeadedAttention``
  no ``d_model`` (api.attributes, int attributes the contract table lists).
Bugs (the real code's, kept): LayerNorm with torch's unbiased std and ``eps`` added outside the root
  (ln.biased-variance); ``Generator`` returns ``log_softmax`` (projection.logits); ``make_model`` builds
  ``MultiHeadedAttention(h, d_model)`` without its ``dropout``, so every attention drops at the default 0.1 whatever
  rate the builder is given (build.structure: a rate it is given does not reach every module it builds).
"""

import copy
import math

import torch
import torch.nn as nn
from torch.nn.functional import log_softmax


class EncoderDecoder(nn.Module):
    """Encoder, decoder, the two embedding stacks and the generator (applied by the caller, not by ``forward``)."""

    def __init__(self, encoder, decoder, src_embed, tgt_embed, generator):
        super(EncoderDecoder, self).__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.src_embed = src_embed
        self.tgt_embed = tgt_embed
        self.generator = generator

    def forward(self, src, tgt, src_mask, tgt_mask):
        "Encode the source, then decode the target against it (the generator is left to the caller)."
        return self.decode(self.encode(src, src_mask), src_mask, tgt, tgt_mask)

    def encode(self, src, src_mask):
        return self.encoder(self.src_embed(src), src_mask)

    def decode(self, memory, src_mask, tgt, tgt_mask):
        return self.decoder(self.tgt_embed(tgt), memory, src_mask, tgt_mask)


class Generator(nn.Module):
    "The output head: a linear map to the vocabulary, then log-probabilities."

    def __init__(self, d_model, vocab):
        super(Generator, self).__init__()
        self.proj = nn.Linear(d_model, vocab)

    def forward(self, x):
        return log_softmax(self.proj(x), dim=-1)


def clones(module, N):
    "N independent deep copies of one module, in a ModuleList."
    return nn.ModuleList([copy.deepcopy(module) for _ in range(N)])


class LayerNorm(nn.Module):
    "Per-feature gain and shift around the standardised input."

    def __init__(self, features, eps=1e-6):
        super(LayerNorm, self).__init__()
        self.a_2 = nn.Parameter(torch.ones(features))
        self.b_2 = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


class Encoder(nn.Module):
    "N copies of one layer, then a norm (the layers are pre-norm, so the stack's output needs one)."

    def __init__(self, layer, N):
        super(Encoder, self).__init__()
        self.layers = clones(layer, N)
        self.norm = LayerNorm(layer.size)

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class SublayerConnection(nn.Module):
    "Residual around a sublayer that sees the normalised input: x + dropout(sublayer(norm(x)))."

    def __init__(self, size, dropout):
        super(SublayerConnection, self).__init__()
        self.norm = LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, sublayer):
        return x + self.dropout(sublayer(self.norm(x)))


class EncoderLayer(nn.Module):
    "Self-attention, then the feed-forward net, each inside a SublayerConnection."

    def __init__(self, size, self_attn, feed_forward, dropout):
        super(EncoderLayer, self).__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout), 2)
        self.size = size

    def forward(self, x, mask):
        x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, mask))
        return self.sublayer[1](x, self.feed_forward)


class Decoder(nn.Module):
    "N copies of one decoder layer, then a norm."

    def __init__(self, layer, N):
        super(Decoder, self).__init__()
        self.layers = clones(layer, N)
        self.norm = LayerNorm(layer.size)

    def forward(self, x, memory, src_mask, tgt_mask):
        for layer in self.layers:
            x = layer(x, memory, src_mask, tgt_mask)
        return self.norm(x)


class DecoderLayer(nn.Module):
    "Masked self-attention, attention over the encoder's output (src_attn), feed-forward."

    def __init__(self, size, self_attn, src_attn, feed_forward, dropout):
        super(DecoderLayer, self).__init__()
        self.size = size
        self.self_attn = self_attn
        self.src_attn = src_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout), 3)

    def forward(self, x, memory, src_mask, tgt_mask):
        m = memory
        x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, tgt_mask))
        x = self.sublayer[1](x, lambda x: self.src_attn(x, m, m, src_mask))
        return self.sublayer[2](x, self.feed_forward)


def subsequent_mask(size):
    "[1, size, size]: position i may look at positions <= i (no head dimension: the attention adds it)."
    attn_shape = (1, size, size)
    upper = torch.triu(torch.ones(attn_shape), diagonal=1).type(torch.uint8)
    return upper == 0


def attention(query, key, value, mask=None, dropout=None):
    "Scaled dot-product attention over [B, h, L, d_k] tensors: (output, weights)."
    d_k = query.size(-1)
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e9)
    p_attn = scores.softmax(dim=-1)
    if dropout is not None:
        p_attn = dropout(p_attn)
    return torch.matmul(p_attn, value), p_attn


class MultiHeadedAttention(nn.Module):
    "h heads of d_k = d_model / h; linears[0..2] project q, k, v, linears[3] the concatenated heads."

    def __init__(self, h, d_model, dropout=0.1):
        super(MultiHeadedAttention, self).__init__()
        assert d_model % h == 0
        self.d_k = d_model // h
        self.h = h
        self.linears = clones(nn.Linear(d_model, d_model), 4)
        self.attn = None
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, query, key, value, mask=None):
        if mask is not None:
            # One mask for every head: [B, 1, Lk] or [B, Lq, Lk] -> [B, 1, 1|Lq, Lk].
            mask = mask.unsqueeze(1)
        nbatches = query.size(0)

        # Project, then split d_model into h heads of d_k: [B, L, d] -> [B, h, L, d_k].
        query, key, value = [
            lin(x).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)
            for lin, x in zip(self.linears, (query, key, value))
        ]

        x, self.attn = attention(query, key, value, mask=mask, dropout=self.dropout)

        # Put the heads side by side again and apply the output projection.
        x = x.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k)
        del query, key, value
        return self.linears[-1](x)


class PositionwiseFeedForward(nn.Module):
    "w_2(dropout(relu(w_1(x))))."

    def __init__(self, d_model, d_ff, dropout=0.1):
        super(PositionwiseFeedForward, self).__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.w_2(self.dropout(self.w_1(x).relu()))


class Embeddings(nn.Module):
    "Token lookup scaled by sqrt(d_model)."

    def __init__(self, d_model, vocab):
        super(Embeddings, self).__init__()
        self.lut = nn.Embedding(vocab, d_model)
        self.d_model = d_model

    def forward(self, x):
        return self.lut(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    "Adds the sinusoid table (computed once for max_len positions), then dropout."

    def __init__(self, d_model, dropout, max_len=5000):
        super(PositionalEncoding, self).__init__()
        self.dropout = nn.Dropout(p=dropout)

        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * -(math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        pe = pe.unsqueeze(0)
        self.register_buffer("pe", pe)

    def forward(self, x):
        x = x + self.pe[:, : x.size(1)].requires_grad_(False)
        return self.dropout(x)


def make_model(src_vocab, tgt_vocab, N=6, d_model=512, d_ff=2048, h=8, dropout=0.1):
    "Build the whole model from hyperparameters; every matrix Xavier-uniform."
    c = copy.deepcopy
    attn = MultiHeadedAttention(h, d_model)
    ff = PositionwiseFeedForward(d_model, d_ff, dropout)
    position = PositionalEncoding(d_model, dropout)
    model = EncoderDecoder(
        Encoder(EncoderLayer(d_model, c(attn), c(ff), dropout), N),
        Decoder(DecoderLayer(d_model, c(attn), c(attn), c(ff), dropout), N),
        nn.Sequential(Embeddings(d_model, src_vocab), c(position)),
        nn.Sequential(Embeddings(d_model, tgt_vocab), c(position)),
        Generator(d_model, tgt_vocab),
    )

    for p in model.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return model
