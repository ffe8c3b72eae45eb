"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

The walkthrough retyped from memory: most class names one letter or word off, ``gamma``/``beta`` for the norm,
``fc1``/``fc2`` for the feed-forward, ``heads`` for ``h`` and a builder with its own argument names.

API differences: classes InputEmbedding, PositionalEncodings, LayerNorm, FeedForward, MultiHeadAttention,
  Projection; PositionalEncodings(d_model, max_len, dropout); LayerNorm(d_model, eps); MultiHeadAttention(d_model,
  heads, dropout); ``d_model`` for ``features`` in every block and stack; attributes embeddings, max_len, gamma/beta,
  fc1/fc2, heads, attn, project; build_transformer(src_vocab, tgt_vocab, src_len, tgt_len, d_model, num_layers,
  heads, dropout, d_ff).
Legal variants: F.softmax / F.relu; torch.matmul; biased variance by ``x.var(unbiased=False)``.
Deviations: masked_fill(mask == 0, float('-inf')) without a NaN clean-up (a fully masked query row is NaN); an odd
  d_model fails in pe[:, 1::2] = cos(...); no float32 upcast for 16-bit inputs.
Bugs:
  * attention scores are not divided by sqrt(d_k);
  * InputEmbedding returns embeddings(x) without the * sqrt(d_model) scale.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class InputEmbedding(nn.Module):
    def __init__(self, d_model, vocab_size):
        super().__init__()
        self.d_model = d_model
        self.vocab_size = vocab_size
        self.embeddings = nn.Embedding(vocab_size, d_model)

    def forward(self, x):
        return self.embeddings(x)


class PositionalEncodings(nn.Module):
    def __init__(self, d_model, max_len, dropout):
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x):
        return self.dropout(x + self.pe[:, : x.size(1)])


class LayerNorm(nn.Module):
    def __init__(self, d_model, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(d_model))
        self.beta = nn.Parameter(torch.zeros(d_model))

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return self.gamma * (x - mean) / torch.sqrt(var + self.eps) + self.beta


class FeedForward(nn.Module):
    def __init__(self, d_model, d_ff, dropout):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, heads, dropout):
        super().__init__()
        assert d_model % heads == 0
        self.d_model = d_model
        self.heads = heads
        self.d_k = d_model // heads
        self.w_q = nn.Linear(d_model, d_model, bias=False)
        self.w_k = nn.Linear(d_model, d_model, bias=False)
        self.w_v = nn.Linear(d_model, d_model, bias=False)
        self.w_o = nn.Linear(d_model, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.attn = None

    @staticmethod
    def attention(query, key, value, mask, dropout):
        scores = torch.matmul(query, key.transpose(-2, -1))
        if mask is not None:
            scores = scores.masked_fill(mask == 0, float("-inf"))
        p_attn = F.softmax(scores, dim=-1)
        if dropout is not None:
            p_attn = dropout(p_attn)
        return torch.matmul(p_attn, value), p_attn

    def split(self, x):
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.d_k).transpose(1, 2)

    def forward(self, q, k, v, mask=None):
        b, n = q.shape[0], q.shape[1]
        q, k, v = self.split(self.w_q(q)), self.split(self.w_k(k)), self.split(self.w_v(v))
        out, self.attn = MultiHeadAttention.attention(q, k, v, mask, self.dropout)
        out = out.transpose(1, 2).contiguous().view(b, n, self.d_model)
        return self.w_o(out)


class ResidualConnection(nn.Module):
    def __init__(self, d_model, dropout):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = LayerNorm(d_model)

    def forward(self, x, sublayer):
        return x + self.dropout(sublayer(self.norm(x)))


class EncoderBlock(nn.Module):
    def __init__(self, d_model, self_attention_block, feed_forward_block, dropout):
        super().__init__()
        self.self_attention_block = self_attention_block
        self.feed_forward_block = feed_forward_block
        self.residual_connections = nn.ModuleList([ResidualConnection(d_model, dropout) for _ in range(2)])

    def forward(self, x, src_mask):
        x = self.residual_connections[0](x, lambda t: self.self_attention_block(t, t, t, src_mask))
        return self.residual_connections[1](x, self.feed_forward_block)


class Encoder(nn.Module):
    def __init__(self, d_model, layers):
        super().__init__()
        self.layers = layers
        self.norm = LayerNorm(d_model)

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class DecoderBlock(nn.Module):
    def __init__(self, d_model, self_attention_block, cross_attention_block, feed_forward_block, dropout):
        super().__init__()
        self.self_attention_block = self_attention_block
        self.cross_attention_block = cross_attention_block
        self.feed_forward_block = feed_forward_block
        self.residual_connections = nn.ModuleList([ResidualConnection(d_model, dropout) for _ in range(3)])

    def forward(self, x, encoder_output, src_mask, tgt_mask):
        x = self.residual_connections[0](x, lambda t: self.self_attention_block(t, t, t, tgt_mask))
        x = self.residual_connections[1](
            x, lambda t: self.cross_attention_block(t, encoder_output, encoder_output, src_mask))
        return self.residual_connections[2](x, self.feed_forward_block)


class Decoder(nn.Module):
    def __init__(self, d_model, layers):
        super().__init__()
        self.layers = layers
        self.norm = LayerNorm(d_model)

    def forward(self, x, encoder_output, src_mask, tgt_mask):
        for layer in self.layers:
            x = layer(x, encoder_output, src_mask, tgt_mask)
        return self.norm(x)


class Projection(nn.Module):
    def __init__(self, d_model, vocab_size):
        super().__init__()
        self.project = nn.Linear(d_model, vocab_size)

    def forward(self, x):
        return self.project(x)


class Transformer(nn.Module):
    def __init__(self, encoder, decoder, src_embed, tgt_embed, src_pos, tgt_pos, projection_layer):
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


def build_transformer(src_vocab, tgt_vocab, src_len, tgt_len, d_model=512, num_layers=6, heads=8, dropout=0.1,
                      d_ff=2048):
    encoder = Encoder(d_model, nn.ModuleList([
        EncoderBlock(d_model, MultiHeadAttention(d_model, heads, dropout), FeedForward(d_model, d_ff, dropout), dropout)
        for _ in range(num_layers)]))
    decoder = Decoder(d_model, nn.ModuleList([
        DecoderBlock(d_model, MultiHeadAttention(d_model, heads, dropout), MultiHeadAttention(d_model, heads, dropout),
                     FeedForward(d_model, d_ff, dropout), dropout)
        for _ in range(num_layers)]))
    model = Transformer(encoder, decoder,
                        InputEmbedding(d_model, src_vocab), InputEmbedding(d_model, tgt_vocab),
                        PositionalEncodings(d_model, src_len, dropout), PositionalEncodings(d_model, tgt_len, dropout),
                        Projection(d_model, tgt_vocab))
    for p in model.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return model
