"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

Written by someone used to Hugging Face model code: ``hidden_size``, ``q_proj``, an ``lm_head`` on top.

API differences: classes PositionalEncodings, OutputHead; ``hidden_size`` for d_model/features everywhere,
  ``ffn_dim`` for d_ff, ``num_heads`` for h, ``max_positions`` for seq_len, ``vocab`` for vocab_size; attributes
  token_embedding, vocab, hidden_size, max_positions, pos_table, scale/shift, fc_in/fc_out, num_heads/head_dim,
  q_proj/k_proj/v_proj/out_proj, attn_probs, residuals, blocks/final_norm, out, lm_head;
  build_transformer(src_vocab_size, tgt_vocab_size, src_seq_len, tgt_seq_len, hidden_size, num_layers, num_heads,
  dropout, ffn_dim); Transformer(..., lm_head).
Legal variants: the table computed in float64 and cast to the default dtype, odd d_model handled; masked_fill with
  torch.finfo(dtype).min; ``scores.softmax(-1)``.
Deviations: no float32 upcast for 16-bit inputs.
Bugs:
  * mask polarity inverted: masked_fill(mask == 1, ...) hides exactly the keys the mask allows;
  * heads merged with view(B, L, d) straight from (B, heads, L, head_dim), without transposing back first.
"""

import math

import torch
import torch.nn as nn


class InputEmbeddings(nn.Module):
    def __init__(self, hidden_size, vocab):
        super().__init__()
        self.hidden_size = hidden_size
        self.vocab = vocab
        self.token_embedding = nn.Embedding(vocab, hidden_size)

    def forward(self, input_ids):
        return self.token_embedding(input_ids) * math.sqrt(self.hidden_size)


class PositionalEncodings(nn.Module):
    def __init__(self, hidden_size, max_positions, dropout):
        super().__init__()
        self.hidden_size = hidden_size
        self.max_positions = max_positions
        self.dropout = nn.Dropout(dropout)
        positions = torch.arange(max_positions, dtype=torch.float64).unsqueeze(-1)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, hidden_size, 2, dtype=torch.float64) / hidden_size))
        freqs = positions * inv_freq
        table = torch.zeros(max_positions, hidden_size, dtype=torch.float64)
        table[:, 0::2] = freqs.sin()
        table[:, 1::2] = freqs.cos()[:, : hidden_size // 2]
        self.register_buffer("pos_table", table.unsqueeze(0).to(torch.get_default_dtype()))

    def forward(self, hidden_states):
        return self.dropout(hidden_states + self.pos_table[:, : hidden_states.size(1)])


class LayerNormalization(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(hidden_size))
        self.shift = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, hidden_states):
        mean = hidden_states.mean(-1, keepdim=True)
        variance = (hidden_states - mean).pow(2).mean(-1, keepdim=True)
        return self.scale * (hidden_states - mean) / torch.sqrt(variance + self.eps) + self.shift


class FeedForwardBlock(nn.Module):
    def __init__(self, hidden_size, ffn_dim, dropout):
        super().__init__()
        self.fc_in = nn.Linear(hidden_size, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc_out = nn.Linear(ffn_dim, hidden_size)

    def forward(self, hidden_states):
        return self.fc_out(self.dropout(torch.relu(self.fc_in(hidden_states))))


class MultiHeadAttentionBlock(nn.Module):
    def __init__(self, hidden_size, num_heads, dropout):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError("hidden_size must be divisible by num_heads")
        self.hidden_size, self.num_heads, self.head_dim = hidden_size, num_heads, hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.attn_probs = None

    @staticmethod
    def attention(query, key, value, mask, dropout):
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(query.size(-1))
        if mask is not None:
            scores = scores.masked_fill(mask == 1, torch.finfo(scores.dtype).min)
        probs = scores.softmax(-1)
        if dropout is not None:
            probs = dropout(probs)
        return torch.matmul(probs, value), probs

    def _shape(self, tensor, seq_len, bsz):
        return tensor.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, q, k, v, mask=None):
        bsz, tgt_len, src_len = q.size(0), q.size(1), k.size(1)
        query = self._shape(self.q_proj(q), tgt_len, bsz)
        key = self._shape(self.k_proj(k), src_len, bsz)
        value = self._shape(self.v_proj(v), src_len, bsz)
        out, self.attn_probs = self.attention(query, key, value, mask, self.dropout)
        out = out.contiguous().view(bsz, tgt_len, self.num_heads * self.head_dim)
        return self.out_proj(out)


class ResidualConnection(nn.Module):
    def __init__(self, hidden_size, dropout):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = LayerNormalization(hidden_size)

    def forward(self, hidden_states, sublayer):
        return hidden_states + self.dropout(sublayer(self.norm(hidden_states)))


class EncoderBlock(nn.Module):
    def __init__(self, hidden_size, self_attention_block, feed_forward_block, dropout):
        super().__init__()
        self.self_attention_block = self_attention_block
        self.feed_forward_block = feed_forward_block
        self.residuals = nn.ModuleList([ResidualConnection(hidden_size, dropout) for _ in range(2)])

    def forward(self, hidden_states, src_mask):
        h = self.residuals[0](hidden_states, lambda x: self.self_attention_block(x, x, x, src_mask))
        return self.residuals[1](h, self.feed_forward_block)


class Encoder(nn.Module):
    def __init__(self, hidden_size, blocks):
        super().__init__()
        self.blocks = blocks
        self.final_norm = LayerNormalization(hidden_size)

    def forward(self, hidden_states, mask):
        for block in self.blocks:
            hidden_states = block(hidden_states, mask)
        return self.final_norm(hidden_states)


class DecoderBlock(nn.Module):
    def __init__(self, hidden_size, self_attention_block, cross_attention_block, feed_forward_block, dropout):
        super().__init__()
        self.self_attention_block = self_attention_block
        self.cross_attention_block = cross_attention_block
        self.feed_forward_block = feed_forward_block
        self.residuals = nn.ModuleList([ResidualConnection(hidden_size, dropout) for _ in range(3)])

    def forward(self, hidden_states, encoder_hidden_states, src_mask, tgt_mask):
        enc = encoder_hidden_states
        h = self.residuals[0](hidden_states, lambda x: self.self_attention_block(x, x, x, tgt_mask))
        h = self.residuals[1](h, lambda x: self.cross_attention_block(x, enc, enc, src_mask))
        return self.residuals[2](h, self.feed_forward_block)


class Decoder(nn.Module):
    def __init__(self, hidden_size, blocks):
        super().__init__()
        self.blocks = blocks
        self.final_norm = LayerNormalization(hidden_size)

    def forward(self, hidden_states, encoder_hidden_states, src_mask, tgt_mask):
        for block in self.blocks:
            hidden_states = block(hidden_states, encoder_hidden_states, src_mask, tgt_mask)
        return self.final_norm(hidden_states)


class OutputHead(nn.Module):
    def __init__(self, hidden_size, vocab):
        super().__init__()
        self.out = nn.Linear(hidden_size, vocab)

    def forward(self, hidden_states):
        return self.out(hidden_states)


class Transformer(nn.Module):
    def __init__(self, encoder, decoder, src_embed, tgt_embed, src_pos, tgt_pos, lm_head):
        super().__init__()
        self.encoder, self.decoder, self.lm_head = encoder, decoder, lm_head
        self.src_embed, self.tgt_embed, self.src_pos, self.tgt_pos = src_embed, tgt_embed, src_pos, tgt_pos

    def encode(self, src, src_mask):
        return self.encoder(self.src_pos(self.src_embed(src)), src_mask)

    def decode(self, encoder_output, src_mask, tgt, tgt_mask):
        return self.decoder(self.tgt_pos(self.tgt_embed(tgt)), encoder_output, src_mask, tgt_mask)

    def project(self, x):
        return self.lm_head(x)


def build_transformer(src_vocab_size, tgt_vocab_size, src_seq_len, tgt_seq_len, hidden_size=512, num_layers=6,
                      num_heads=8, dropout=0.1, ffn_dim=2048):
    def attn():
        return MultiHeadAttentionBlock(hidden_size, num_heads, dropout)

    def ffn():
        return FeedForwardBlock(hidden_size, ffn_dim, dropout)

    encoder = Encoder(hidden_size, nn.ModuleList(
        [EncoderBlock(hidden_size, attn(), ffn(), dropout) for _ in range(num_layers)]))
    decoder = Decoder(hidden_size, nn.ModuleList(
        [DecoderBlock(hidden_size, attn(), attn(), ffn(), dropout) for _ in range(num_layers)]))
    model = Transformer(encoder, decoder, InputEmbeddings(hidden_size, src_vocab_size),
                        InputEmbeddings(hidden_size, tgt_vocab_size),
                        PositionalEncodings(hidden_size, src_seq_len, dropout),
                        PositionalEncodings(hidden_size, tgt_seq_len, dropout), OutputHead(hidden_size, tgt_vocab_size))
    for name, param in model.named_parameters():
        if param.dim() > 1:
            nn.init.xavier_uniform_(param)
    return model
