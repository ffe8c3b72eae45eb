"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

Lecture-notes style: shape comments on every line, ``source``/``target`` spelled out, embedding arguments in
``nn.Embedding``'s order, and the early walkthrough's ``log_softmax`` at the top.

API differences: InputEmbeddings(vocab_size, d_model) (reordered); attributes self_attention/cross_attention/
  feed_forward on the blocks; Transformer(encoder, decoder, source_embed, target_embed, source_pos, target_pos,
  projection) with those attribute names.
Legal variants: nn.Linear with bias on w_q/w_k/w_v/w_o; ``x.var(correction=0)`` as the variance; heads
  merged with ``reshape``.
Deviations: masked_fill(mask == 0, -1e9) overflows float16 (RuntimeError); an odd d_model fails in
  pe[:, 1::2] = cos(...); no float32 upcast for 16-bit inputs.
Bugs:
  * DecoderBlock's cross-attention takes keys and values from the decoder's own input: cross_attention(x, x, x,
    src_mask) (unnoticed with the blog's data, where source and target are padded to one seq_len);
  * ProjectionLayer returns torch.log_softmax(proj(x), dim=-1) instead of the logits.
"""

import math

import torch
import torch.nn as nn


class InputEmbeddings(nn.Module):
    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)  # lookup table (vocab_size, d_model)

    def forward(self, x):
        # x: (B, L) token ids -> (B, L, d_model); paper, section 3.4: multiply by sqrt(d_model)
        return self.embedding(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, seq_len: int, dropout: float):
        super().__init__()
        self.d_model = d_model
        self.seq_len = seq_len
        self.dropout = nn.Dropout(dropout)
        pos = torch.arange(0, seq_len).unsqueeze(1)  # (L, 1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))  # (d_model / 2,)
        pe = torch.zeros(seq_len, d_model)  # (L, d_model)
        pe[:, 0::2] = torch.sin(pos * div_term)  # even columns: sin
        pe[:, 1::2] = torch.cos(pos * div_term)  # odd columns: cos
        self.register_buffer("pe", pe.unsqueeze(0))  # (1, L, d_model), saved with the model, not trained

    def forward(self, x):
        # x: (B, L, d_model)
        return self.dropout(x + self.pe[:, : x.shape[1], :])


class LayerNormalization(nn.Module):
    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(features))  # (d_model,)
        self.bias = nn.Parameter(torch.zeros(features))  # (d_model,)

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)  # (B, L, 1)
        var = x.var(dim=-1, keepdim=True, correction=0)  # (B, L, 1), population variance as in nn.LayerNorm
        return self.alpha * (x - mean) / torch.sqrt(var + self.eps) + self.bias


class FeedForwardBlock(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.linear_1 = nn.Linear(d_model, d_ff)  # (d_model -> d_ff)
        self.dropout = nn.Dropout(dropout)
        self.linear_2 = nn.Linear(d_ff, d_model)  # (d_ff -> d_model)

    def forward(self, x):
        return self.linear_2(self.dropout(torch.relu(self.linear_1(x))))  # (B, L, d_model)


class MultiHeadAttentionBlock(nn.Module):
    def __init__(self, d_model: int, h: int, dropout: float):
        super().__init__()
        assert d_model % h == 0
        self.d_model = d_model
        self.h = h
        self.d_k = d_model // h
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def attention(query, key, value, mask, dropout):
        d_k = query.shape[-1]
        scores = (query @ key.transpose(-2, -1)) / math.sqrt(d_k)  # (B, h, Lq, Lk)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e9)  # hide padding / future positions
        scores = scores.softmax(dim=-1)  # each query row sums to 1 over the keys
        if dropout is not None:
            scores = dropout(scores)
        return scores @ value, scores  # (B, h, Lq, d_k), (B, h, Lq, Lk)

    def forward(self, q, k, v, mask):
        B = q.shape[0]
        query = self.w_q(q).view(B, -1, self.h, self.d_k).transpose(1, 2)  # (B, h, Lq, d_k)
        key = self.w_k(k).view(B, -1, self.h, self.d_k).transpose(1, 2)  # (B, h, Lk, d_k)
        value = self.w_v(v).view(B, -1, self.h, self.d_k).transpose(1, 2)  # (B, h, Lk, d_k)
        x, self.attention_scores = MultiHeadAttentionBlock.attention(query, key, value, mask, self.dropout)
        x = x.transpose(1, 2).reshape(B, -1, self.d_model)  # (B, Lq, d_model)
        return self.w_o(x)


class ResidualConnection(nn.Module):
    def __init__(self, features: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = LayerNormalization(features)

    def forward(self, x, sublayer):
        return x + self.dropout(sublayer(self.norm(x)))  # pre-norm


class EncoderBlock(nn.Module):
    def __init__(self, features, self_attention, feed_forward, dropout):
        super().__init__()
        self.self_attention = self_attention
        self.feed_forward = feed_forward
        self.residual_connections = nn.ModuleList([ResidualConnection(features, dropout) for _ in range(2)])

    def forward(self, x, src_mask):
        x = self.residual_connections[0](x, lambda x: self.self_attention(x, x, x, src_mask))
        return self.residual_connections[1](x, self.feed_forward)


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
    def __init__(self, features, self_attention, cross_attention, feed_forward, dropout):
        super().__init__()
        self.self_attention = self_attention
        self.cross_attention = cross_attention
        self.feed_forward = feed_forward
        self.residual_connections = nn.ModuleList([ResidualConnection(features, dropout) for _ in range(3)])

    def forward(self, x, encoder_output, src_mask, tgt_mask):
        x = self.residual_connections[0](x, lambda x: self.self_attention(x, x, x, tgt_mask))  # masked self-attn
        x = self.residual_connections[1](x, lambda x: self.cross_attention(x, x, x, src_mask))  # look at the source
        return self.residual_connections[2](x, self.feed_forward)


class Decoder(nn.Module):
    def __init__(self, features, layers):
        super().__init__()
        self.layers = layers
        self.norm = LayerNormalization(features)

    def forward(self, x, encoder_output, src_mask, tgt_mask):
        for layer in self.layers:
            x = layer(x, encoder_output, src_mask, tgt_mask)
        return self.norm(x)


class ProjectionLayer(nn.Module):
    def __init__(self, d_model, vocab_size):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x):
        return torch.log_softmax(self.proj(x), dim=-1)  # (B, L, vocab_size)


class Transformer(nn.Module):
    def __init__(self, encoder, decoder, source_embed, target_embed, source_pos, target_pos, projection):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.source_embed, self.target_embed = source_embed, target_embed
        self.source_pos, self.target_pos = source_pos, target_pos
        self.projection = projection

    def encode(self, src, src_mask):
        return self.encoder(self.source_pos(self.source_embed(src)), src_mask)  # (B, Ls, d_model)

    def decode(self, encoder_output, src_mask, tgt, tgt_mask):
        return self.decoder(self.target_pos(self.target_embed(tgt)), encoder_output, src_mask, tgt_mask)

    def project(self, x):
        return self.projection(x)  # (B, Lt, vocab_size)


def build_transformer(src_vocab_size, tgt_vocab_size, src_seq_len, tgt_seq_len, d_model=512, N=6, h=8,
                      dropout=0.1, d_ff=2048):
    encoder_blocks = [EncoderBlock(d_model, MultiHeadAttentionBlock(d_model, h, dropout),
                                   FeedForwardBlock(d_model, d_ff, dropout), dropout) for _ in range(N)]
    decoder_blocks = [DecoderBlock(d_model, MultiHeadAttentionBlock(d_model, h, dropout),
                                   MultiHeadAttentionBlock(d_model, h, dropout),
                                   FeedForwardBlock(d_model, d_ff, dropout), dropout) for _ in range(N)]
    transformer = Transformer(Encoder(d_model, nn.ModuleList(encoder_blocks)),
                              Decoder(d_model, nn.ModuleList(decoder_blocks)),
                              InputEmbeddings(src_vocab_size, d_model), InputEmbeddings(tgt_vocab_size, d_model),
                              PositionalEncoding(d_model, src_seq_len, dropout),
                              PositionalEncoding(d_model, tgt_seq_len, dropout),
                              ProjectionLayer(d_model, tgt_vocab_size))
    for p in transformer.parameters():  # Xavier/Glorot for every weight matrix
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return transformer
