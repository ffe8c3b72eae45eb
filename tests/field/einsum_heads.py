"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

A learner who likes einsum: attention scores and the weighted sum written as einsum strings, the feed-forward named
as in the Annotated Transformer (``w_1``/``w_2``), heads counted by ``n_heads``.

API differences: classes PositionalEmbedding, PositionwiseFeedForward; attributes w_1/w_2 (feed-forward),
  n_heads/d_head/attn_weights (attention); MultiHeadAttentionBlock(d_model, n_heads, dropout);
  build_transformer(..., n_layers=6, n_heads=8, ...).
Legal variants: einsum for q k^T and for weights @ v; heads split with view + permute; LayerNorm statistics from
  torch.var_mean(correction=0); table computed in float64 and cast to the default dtype.
Deviations: masked_fill(mask == 0, -1e9) overflows float16 (RuntimeError); an odd d_model fails in
  pe[:, 1::2] = cos(...); no float32 upcast for 16-bit inputs.
Bugs:
  * attention softmax over dim=2 of (batch, heads, q, k), the query axis, instead of the keys;
  * Decoder keeps a final ``norm`` but returns the last block's output without applying it.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class InputEmbeddings(nn.Module):
    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.d_model = d_model
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model)

    def forward(self, x):
        return self.embedding(x) * math.sqrt(self.d_model)


class PositionalEmbedding(nn.Module):
    def __init__(self, d_model: int, seq_len: int, dropout: float):
        super().__init__()
        self.d_model = d_model
        self.seq_len = seq_len
        self.dropout = nn.Dropout(p=dropout)
        pos = torch.arange(seq_len, dtype=torch.float64)[:, None]
        freqs = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * -(math.log(10000.0) / d_model))
        pe = torch.zeros(seq_len, d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(pos * freqs)
        pe[:, 1::2] = torch.cos(pos * freqs)
        self.register_buffer("pe", pe[None].to(torch.get_default_dtype()))

    def forward(self, x):
        return self.dropout(x + self.pe[:, : x.shape[1], :])


class LayerNormalization(nn.Module):
    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
        return self.alpha * (x - mean) / torch.sqrt(var + self.eps) + self.bias


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class MultiHeadAttentionBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.w_q = nn.Linear(d_model, d_model, bias=False)
        self.w_k = nn.Linear(d_model, d_model, bias=False)
        self.w_v = nn.Linear(d_model, d_model, bias=False)
        self.w_o = nn.Linear(d_model, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.attn_weights = None

    @staticmethod
    def attention(query, key, value, mask, dropout):
        # query: (b, h, q, d), key/value: (b, h, k, d)
        scores = torch.einsum("bhqd,bhkd->bhqk", query, key) / math.sqrt(query.size(-1))
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e9)
        weights = F.softmax(scores, dim=2)  # normalise over k
        if dropout is not None:
            weights = dropout(weights)
        return torch.einsum("bhqk,bhkd->bhqd", weights, value), weights

    def forward(self, q, k, v, mask=None):
        b = q.size(0)
        query = self.w_q(q).view(b, -1, self.n_heads, self.d_head).permute(0, 2, 1, 3)
        key = self.w_k(k).view(b, -1, self.n_heads, self.d_head).permute(0, 2, 1, 3)
        value = self.w_v(v).view(b, -1, self.n_heads, self.d_head).permute(0, 2, 1, 3)
        out, self.attn_weights = self.attention(query, key, value, mask, self.dropout)
        out = out.permute(0, 2, 1, 3).reshape(b, -1, self.d_model)
        return self.w_o(out)


class ResidualConnection(nn.Module):
    def __init__(self, features: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = LayerNormalization(features)

    def forward(self, x, sublayer):
        return x + self.dropout(sublayer(self.norm(x)))


class EncoderBlock(nn.Module):
    def __init__(self, features, self_attention_block, feed_forward_block, dropout):
        super().__init__()
        self.self_attention_block = self_attention_block
        self.feed_forward_block = feed_forward_block
        self.residual_connections = nn.ModuleList([ResidualConnection(features, dropout) for _ in range(2)])

    def forward(self, x, src_mask):
        x = self.residual_connections[0](x, lambda x: self.self_attention_block(x, x, x, src_mask))
        return self.residual_connections[1](x, self.feed_forward_block)


class Encoder(nn.Module):
    def __init__(self, features, layers):
        super().__init__()
        self.layers = layers
        self.norm = LayerNormalization(features)

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class DecoderBlock(nn.Module):
    def __init__(self, features, self_attention_block, cross_attention_block, feed_forward_block, dropout):
        super().__init__()
        self.self_attention_block = self_attention_block
        self.cross_attention_block = cross_attention_block
        self.feed_forward_block = feed_forward_block
        self.residual_connections = nn.ModuleList([ResidualConnection(features, dropout) for _ in range(3)])

    def forward(self, x, encoder_output, src_mask, tgt_mask):
        x = self.residual_connections[0](x, lambda x: self.self_attention_block(x, x, x, tgt_mask))
        x = self.residual_connections[1](x, lambda x: self.cross_attention_block(x, encoder_output, encoder_output,
                                                                                   src_mask))
        return self.residual_connections[2](x, self.feed_forward_block)


class Decoder(nn.Module):
    def __init__(self, features, layers):
        super().__init__()
        self.layers = layers
        self.norm = LayerNormalization(features)

    def forward(self, x, encoder_output, src_mask, tgt_mask):
        for layer in self.layers:
            x = layer(x, encoder_output, src_mask, tgt_mask)
        return x


class ProjectionLayer(nn.Module):
    def __init__(self, d_model, vocab_size):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x):
        return self.proj(x)


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


def build_transformer(src_vocab_size, tgt_vocab_size, src_seq_len, tgt_seq_len, d_model=512, n_layers=6, n_heads=8,
                      dropout=0.1, d_ff=2048):
    enc_layers, dec_layers = [], []
    for _ in range(n_layers):
        enc_layers.append(EncoderBlock(d_model, MultiHeadAttentionBlock(d_model, n_heads, dropout),
                                       PositionwiseFeedForward(d_model, d_ff, dropout), dropout))
        dec_layers.append(DecoderBlock(d_model, MultiHeadAttentionBlock(d_model, n_heads, dropout),
                                       MultiHeadAttentionBlock(d_model, n_heads, dropout),
                                       PositionwiseFeedForward(d_model, d_ff, dropout), dropout))
    model = Transformer(
        encoder=Encoder(d_model, nn.ModuleList(enc_layers)),
        decoder=Decoder(d_model, nn.ModuleList(dec_layers)),
        src_embed=InputEmbeddings(d_model, src_vocab_size),
        tgt_embed=InputEmbeddings(d_model, tgt_vocab_size),
        src_pos=PositionalEmbedding(d_model, src_seq_len, dropout),
        tgt_pos=PositionalEmbedding(d_model, tgt_seq_len, dropout),
        projection_layer=ProjectionLayer(d_model, tgt_vocab_size),
    )
    for p in model.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return model
