"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

The paper's own layout, in the paper's vocabulary: post-norm residuals ``LayerNorm(x + Dropout(Sublayer(x)))``
(section 3.1 and 5.4 of "Attention Is All You Need"; ``nn.Transformer``'s default ``norm_first=False``), ``AddNorm``,
``W_Q``/``W_K``/``W_V``/``W_O``, ``P_drop`` as ``p_drop``, ``masked_self_attn``/``enc_dec_attn``. **Correct** under
``variant = "post-norm"``: only the declared variant, renames, reorders and legal variants.

Shape: ``AddNorm(d_model, p_drop)`` normalises after the sum, so every block's output is normalised;
  ``Encoder``/``Decoder`` still apply a final ``layer_norm`` after their last layer, as ``nn.Transformer`` does under
  ``norm_first=False`` (its ``encoder_norm``/``decoder_norm``) and as the kit's post-norm variant expects (the paper
  itself has no extra norm there); the position-wise feed-forward network is one
  ``net = nn.Sequential(Linear(d_model, d_ff), ReLU(), Dropout(p_drop), Linear(d_ff, d_model))``.
Legal variants: biased variance by ``torch.var_mean(correction=0)``, normalised in float32 for 16-bit inputs;
  masked scores filled with ``-inf`` and cleaned with ``torch.nan_to_num`` (a fully masked row is zeros); 16-bit
  attention in float32, cast back; heads split with ``unflatten``, merged with ``flatten``; the position table in
  float64 via ``pos / 10000 ** (2i / d_model)``, cast once, odd ``d_model`` handled; reordered arguments
  (``PositionalEncoding(d_model, p_drop, max_len)``).
Deviations: none (post-norm is declared). Bugs: none.
"""

import math

import torch
from torch import nn

_HALF = (torch.float16, torch.bfloat16)


class Embeddings(nn.Module):
    """Learned embeddings, multiplied by sqrt(d_model) (section 3.4)."""

    def __init__(self, d_model, vocab_size):
        super().__init__()
        self.d_model = d_model
        self.vocab_size = vocab_size
        self.emb = nn.Embedding(vocab_size, d_model)

    def forward(self, tokens):
        return self.emb(tokens) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)) (section 3.5)."""

    def __init__(self, d_model, p_drop, max_len):
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.dropout = nn.Dropout(p_drop)
        pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
        two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
        angle = pos / 10000 ** (two_i / d_model)
        pe = torch.zeros(max_len, d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
        self.register_buffer("pe", pe.unsqueeze(0).to(torch.get_default_dtype()))

    def forward(self, x):
        return self.dropout(x + self.pe[:, : x.size(1)])


class LayerNorm(nn.Module):
    """gamma * (x - mean) / sqrt(var + eps) + beta (biased variance)."""

    def __init__(self, d_model, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(d_model))
        self.beta = nn.Parameter(torch.zeros(d_model))

    def forward(self, x):
        xf = x.float() if x.dtype in _HALF else x
        var, mean = torch.var_mean(xf, dim=-1, keepdim=True, correction=0)
        return (self.gamma * (xf - mean) / torch.sqrt(var + self.eps) + self.beta).to(x.dtype)


class FFN(nn.Module):
    """FFN(x) = max(0, x W1 + b1) W2 + b2 (section 3.3), with dropout on the hidden layer."""

    def __init__(self, d_model, d_ff, p_drop):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(p_drop), nn.Linear(d_ff, d_model))

    def forward(self, x):
        return self.net(x)


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W_O, head_i = Attention(Q W_Q^i, K W_K^i, V W_V^i)."""

    def __init__(self, d_model, h, p_drop):
        super().__init__()
        assert d_model % h == 0, "d_model must be a multiple of h"
        self.d_model, self.h, self.d_k = d_model, h, d_model // h
        self.W_Q = nn.Linear(d_model, d_model, bias=False)
        self.W_K = nn.Linear(d_model, d_model, bias=False)
        self.W_V = nn.Linear(d_model, d_model, bias=False)
        self.W_O = nn.Linear(d_model, d_model, bias=False)
        self.dropout = nn.Dropout(p_drop)
        self.attn_weights = None

    @staticmethod
    def scaled_dot_product_attention(Q, K, V, mask, dropout):
        """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V (section 3.2.1); mask: nonzero = may attend."""
        dtype = Q.dtype
        if dtype in _HALF:
            Q, K, V = Q.float(), K.float(), V.float()
        scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))
        if mask is not None:
            scores = scores.masked_fill(mask == 0, float("-inf"))
        weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)  # no key to attend to: zeros
        if dropout is not None:
            weights = dropout(weights)
        return (weights @ V).to(dtype), weights.to(dtype)

    def forward(self, Q, K, V, mask=None):
        heads = lambda t: t.unflatten(-1, (self.h, self.d_k)).transpose(1, 2)  # noqa: E731  (B, h, L, d_k)
        x, self.attn_weights = MultiHeadAttention.scaled_dot_product_attention(
            heads(self.W_Q(Q)), heads(self.W_K(K)), heads(self.W_V(V)), mask, self.dropout)
        return self.W_O(x.transpose(1, 2).flatten(-2))


class AddNorm(nn.Module):
    """LayerNorm(x + Dropout(Sublayer(x))): the residual and the norm after it (post-norm)."""

    def __init__(self, d_model, p_drop):
        super().__init__()
        self.layer_norm = LayerNorm(d_model)
        self.dropout = nn.Dropout(p_drop)

    def forward(self, x, sublayer):
        return self.layer_norm(x + self.dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    def __init__(self, d_model, self_attn, ffn, p_drop):
        super().__init__()
        self.self_attn = self_attn
        self.ffn = ffn
        self.add_norm = nn.ModuleList([AddNorm(d_model, p_drop) for _ in range(2)])

    def forward(self, x, src_mask):
        x = self.add_norm[0](x, lambda y: self.self_attn(y, y, y, src_mask))
        return self.add_norm[1](x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, d_model, masked_self_attn, enc_dec_attn, ffn, p_drop):
        super().__init__()
        self.masked_self_attn = masked_self_attn
        self.enc_dec_attn = enc_dec_attn
        self.ffn = ffn
        self.add_norm = nn.ModuleList([AddNorm(d_model, p_drop) for _ in range(3)])

    def forward(self, x, memory, src_mask, tgt_mask):
        x = self.add_norm[0](x, lambda y: self.masked_self_attn(y, y, y, tgt_mask))
        x = self.add_norm[1](x, lambda y: self.enc_dec_attn(y, memory, memory, src_mask))
        return self.add_norm[2](x, self.ffn)


class Encoder(nn.Module):
    def __init__(self, d_model, layers):
        super().__init__()
        self.layers = layers
        self.layer_norm = LayerNorm(d_model)

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return self.layer_norm(x)


class Decoder(nn.Module):
    def __init__(self, d_model, layers):
        super().__init__()
        self.layers = layers
        self.layer_norm = LayerNorm(d_model)

    def forward(self, x, memory, src_mask, tgt_mask):
        for layer in self.layers:
            x = layer(x, memory, src_mask, tgt_mask)
        return self.layer_norm(x)


class OutputProjection(nn.Module):
    """The learned linear transformation before the softmax: logits (the loss applies the softmax)."""

    def __init__(self, d_model, vocab_size):
        super().__init__()
        self.linear = nn.Linear(d_model, vocab_size)

    def forward(self, x):
        return self.linear(x)


class Transformer(nn.Module):
    def __init__(self, encoder, decoder, src_embed, tgt_embed, src_pe, tgt_pe, output_linear):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.src_embed = src_embed
        self.tgt_embed = tgt_embed
        self.src_pe = src_pe
        self.tgt_pe = tgt_pe
        self.output_linear = output_linear

    def encode(self, src, src_mask):
        return self.encoder(self.src_pe(self.src_embed(src)), src_mask)

    def decode(self, memory, src_mask, tgt, tgt_mask):
        return self.decoder(self.tgt_pe(self.tgt_embed(tgt)), memory, src_mask, tgt_mask)

    def project(self, x):
        return self.output_linear(x)


def build_transformer(src_vocab_size, tgt_vocab_size, src_seq_len, tgt_seq_len, d_model=512, N=6, h=8, p_drop=0.1,
                      d_ff=2048):
    """The base model of Table 3 (N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1), Xavier-uniform matrices."""
    encoder = Encoder(d_model, nn.ModuleList([
        EncoderLayer(d_model, MultiHeadAttention(d_model, h, p_drop), FFN(d_model, d_ff, p_drop), p_drop)
        for _ in range(N)]))
    decoder = Decoder(d_model, nn.ModuleList([
        DecoderLayer(d_model, MultiHeadAttention(d_model, h, p_drop), MultiHeadAttention(d_model, h, p_drop),
                     FFN(d_model, d_ff, p_drop), p_drop)
        for _ in range(N)]))
    model = Transformer(encoder, decoder, Embeddings(d_model, src_vocab_size), Embeddings(d_model, tgt_vocab_size),
                        PositionalEncoding(d_model, p_drop, src_seq_len),
                        PositionalEncoding(d_model, p_drop, tgt_seq_len),
                        OutputProjection(d_model, tgt_vocab_size))
    for p in model.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return model
