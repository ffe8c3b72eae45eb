"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

An encoder-decoder written in the compact style of minGPT/nanoGPT (karpathy): ``n_embd``/``n_head``/``n_layer``,
``block_size``, ``wte``, ``c_attn``/``c_proj``, ``c_fc``, ``ln_f``, the stacks' blocks in ``h``, the model's parts in a
``self.transformer = nn.ModuleDict(...)``, ``lm_head``. **Correct**: it differs from the walkthrough in shape and
names only.

Shape: the attention has ONE fused input projection ``c_attn = nn.Linear(n_embd, 3 * n_embd)`` (rows: q, k, v) and
  the output projection ``c_proj``. Self-attention (``q is k is v``) does one matmul and ``.split(n_embd, dim=2)``;
  cross-attention takes q from the decoder and a fused k/v from the memory with the same weights in slices,
  ``F.linear(q, W[:d])`` and ``F.linear(memory, W[d:]).split(n_embd, dim=2)`` (how ``nn.MultiheadAttention``'s packed
  in-projection handles the cases); distinct k and v get one slice each. The scaled dot-product attention is the
  static method ``attend``; the weights are kept in ``att``. ``Seq2Seq`` holds the encoder, decoder, token tables
  and position tables in ``self.transformer`` (a ModuleDict: ``transformer.enc``, ``transformer.src_wte``, ...) and the
  head in ``lm_head``. ``Encoder``/``Decoder`` keep their blocks in ``h`` and the final norm in ``ln_f``.
  ``LayerNorm(ndim, bias=True, eps=1e-6)`` through ``F.layer_norm`` (``weight``/``bias``).
Legal variants: biases on the fused projection and on ``c_proj``; Xavier-uniform on each [d, d] slice of ``c_attn``
  (not on the fused [3d, d] matrix, whose fan-out would give a smaller bound); masked scores filled with
  ``torch.finfo(dtype).min`` (a fully masked row gets uniform, finite weights); 16-bit attention in float32, cast
  back; the position table in float64, cast once, odd ``n_embd`` handled; F.layer_norm; reordered arguments
  (``TokenEmbedding(vocab_size, n_embd)``, ``LayerNorm(ndim, bias, eps)``).
Where it departs from nanoGPT because the contract has no room for it (not bugs): sinusoidal positions instead of a
  learned ``wpe``; ReLU instead of GELU; the dropout after the sublayer sits in ``Residual`` (nanoGPT's
  ``resid_dropout``/MLP dropout sit inside the sublayers); the residuals are modules (nanoGPT writes
  ``x = x + self.attn(self.ln_1(x))`` in the block); the blocks take their sublayers as arguments (nanoGPT's
  ``Block(config)`` builds them); the builder takes keyword sizes, not a ``GPTConfig``; Xavier, not normal(0, 0.02).
Deviations: none. Bugs: none.
"""

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

_HALF = (torch.float16, torch.bfloat16)


class TokenEmbedding(nn.Module):
    def __init__(self, vocab_size, n_embd):
        super().__init__()
        self.vocab_size = vocab_size
        self.n_embd = n_embd
        self.wte = nn.Embedding(vocab_size, n_embd)

    def forward(self, idx):
        return self.wte(idx) * math.sqrt(self.n_embd)


class SinusoidalPositionalEncoding(nn.Module):
    def __init__(self, n_embd, block_size, dropout):
        super().__init__()
        self.n_embd = n_embd
        self.block_size = block_size
        self.drop = nn.Dropout(dropout)
        pos = torch.arange(block_size, dtype=torch.float64)[:, None]  # (T, 1)
        freq = torch.exp(torch.arange(0, n_embd, 2, dtype=torch.float64) * (-math.log(10000.0) / n_embd))
        ang = pos * freq  # (T, ceil(C/2))
        table = torch.zeros(block_size, n_embd, dtype=torch.float64)
        table[:, 0::2] = torch.sin(ang)
        table[:, 1::2] = torch.cos(ang[:, : n_embd // 2])  # odd n_embd: one cosine column fewer
        self.register_buffer("wpe", table[None].to(torch.get_default_dtype()))  # (1, T, C)

    def forward(self, x):
        return self.drop(x + self.wpe[:, : x.size(1)])


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (as nanoGPT's), through F.layer_norm."""

    def __init__(self, ndim, bias=True, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, self.eps)


class MLP(nn.Module):
    def __init__(self, n_embd, n_ff, dropout):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, n_ff)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.c_proj = nn.Linear(n_ff, n_embd)

    def forward(self, x):
        return self.c_proj(self.dropout(self.relu(self.c_fc(x))))


class Attention(nn.Module):
    """Multi-head attention with one fused q/k/v projection (rows [0:d] q, [d:2d] k, [2d:3d] v)."""

    def __init__(self, n_embd, n_head, dropout, bias=True):
        super().__init__()
        assert n_embd % n_head == 0
        self.n_embd = n_embd
        self.n_head = n_head
        self.head_size = n_embd // n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # q, k, v for all heads, in a batch
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.att = None

    @staticmethod
    def attend(q, k, v, mask, dropout):
        """softmax(q k^T / sqrt(hs)) v over (B, nh, T, hs); mask: nonzero = may attend."""
        dtype = q.dtype
        if dtype in _HALF:
            q, k, v = q.float(), k.float(), v.float()
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        if mask is not None:
            att = att.masked_fill(mask == 0, torch.finfo(att.dtype).min)
        att = F.softmax(att, dim=-1)
        if dropout is not None:
            att = dropout(att)
        return (att @ v).to(dtype), att.to(dtype)

    def forward(self, q, k, v, mask=None):
        B, Tq, C = q.size()
        Tk = k.size(1)
        if q is k and k is v:  # self-attention: one matmul for the three
            q, k, v = self.c_attn(q).split(self.n_embd, dim=2)
        else:  # the same weights, row slices: q from the queries, k and v (fused when they are one tensor)
            w, b = self.c_attn.weight, self.c_attn.bias
            bq, bkv = (None, None) if b is None else (b[:C], b[C:])
            q = F.linear(q, w[:C], bq)
            if k is v:
                k, v = F.linear(k, w[C:], bkv).split(self.n_embd, dim=2)
            else:
                k = F.linear(k, w[C:2 * C], None if b is None else b[C:2 * C])
                v = F.linear(v, w[2 * C:], None if b is None else b[2 * C:])
        q = q.view(B, Tq, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, Tq, hs)
        k = k.view(B, Tk, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, Tk, hs)
        v = v.view(B, Tk, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, Tk, hs)
        y, self.att = Attention.attend(q, k, v, mask, self.attn_dropout)
        y = y.transpose(1, 2).contiguous().view(B, Tq, C)  # re-assemble all head outputs side by side
        return self.c_proj(y)


class Residual(nn.Module):
    """x + drop(sublayer(ln(x)))."""

    def __init__(self, n_embd, dropout):
        super().__init__()
        self.ln = LayerNorm(n_embd)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, sublayer):
        return x + self.drop(sublayer(self.ln(x)))


class EncoderBlock(nn.Module):
    def __init__(self, n_embd, attn, mlp, dropout):
        super().__init__()
        self.attn = attn
        self.mlp = mlp
        self.res = nn.ModuleList([Residual(n_embd, dropout) for _ in range(2)])

    def forward(self, x, mask):
        x = self.res[0](x, lambda t: self.attn(t, t, t, mask))
        return self.res[1](x, self.mlp)


class DecoderBlock(nn.Module):
    def __init__(self, n_embd, attn, xattn, mlp, dropout):
        super().__init__()
        self.attn = attn
        self.xattn = xattn
        self.mlp = mlp
        self.res = nn.ModuleList([Residual(n_embd, dropout) for _ in range(3)])

    def forward(self, x, memory, src_mask, tgt_mask):
        x = self.res[0](x, lambda t: self.attn(t, t, t, tgt_mask))
        x = self.res[1](x, lambda t: self.xattn(t, memory, memory, src_mask))
        return self.res[2](x, self.mlp)


class Encoder(nn.Module):
    def __init__(self, n_embd, blocks):
        super().__init__()
        self.h = blocks
        self.ln_f = LayerNorm(n_embd)

    def forward(self, x, mask):
        for block in self.h:
            x = block(x, mask)
        return self.ln_f(x)


class Decoder(nn.Module):
    def __init__(self, n_embd, blocks):
        super().__init__()
        self.h = blocks
        self.ln_f = LayerNorm(n_embd)

    def forward(self, x, memory, src_mask, tgt_mask):
        for block in self.h:
            x = block(x, memory, src_mask, tgt_mask)
        return self.ln_f(x)


class LMHead(nn.Module):
    def __init__(self, n_embd, vocab_size):
        super().__init__()
        self.out = nn.Linear(n_embd, vocab_size)

    def forward(self, x):
        return self.out(x)  # logits


class Seq2Seq(nn.Module):
    def __init__(self, encoder, decoder, src_wte, tgt_wte, src_wpe, tgt_wpe, lm_head):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            src_wte=src_wte, src_wpe=src_wpe, enc=encoder,
            tgt_wte=tgt_wte, tgt_wpe=tgt_wpe, dec=decoder,
        ))
        self.lm_head = lm_head

    def encode(self, src, src_mask):
        t = self.transformer
        return t.enc(t.src_wpe(t.src_wte(src)), src_mask)

    def decode(self, memory, src_mask, tgt, tgt_mask):
        t = self.transformer
        return t.dec(t.tgt_wpe(t.tgt_wte(tgt)), memory, src_mask, tgt_mask)

    def project(self, x):
        return self.lm_head(x)


def _init_weights(model):
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        if name.endswith("c_attn.weight"):  # each of q, k, v is a [d, d] matrix of its own
            for w in p.data.split(p.size(1), dim=0):
                nn.init.xavier_uniform_(w)
        else:
            nn.init.xavier_uniform_(p)


def build_model(src_vocab_size, tgt_vocab_size, src_block_size, tgt_block_size, n_embd=512, n_layer=6, n_head=8,
                 dropout=0.1, n_ff=2048, bias=True):
    def attn():
        return Attention(n_embd, n_head, dropout, bias=bias)

    encoder = Encoder(n_embd, nn.ModuleList(
        [EncoderBlock(n_embd, attn(), MLP(n_embd, n_ff, dropout), dropout) for _ in range(n_layer)]))
    decoder = Decoder(n_embd, nn.ModuleList(
        [DecoderBlock(n_embd, attn(), attn(), MLP(n_embd, n_ff, dropout), dropout) for _ in range(n_layer)]))
    model = Seq2Seq(encoder, decoder, TokenEmbedding(src_vocab_size, n_embd), TokenEmbedding(tgt_vocab_size, n_embd),
                       SinusoidalPositionalEncoding(n_embd, src_block_size, dropout),
                       SinusoidalPositionalEncoding(n_embd, tgt_block_size, dropout), LMHead(n_embd, tgt_vocab_size))
    _init_weights(model)
    return model
