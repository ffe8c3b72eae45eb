"""Test fixture of the conformance kit: a learner-style model file (the field set, ``tests/field/``).

Written from scratch in the style of gordicaleksa/pytorch-original-transformer (``models/definitions/
transformer_model.py``): its names (``model_dimension``, ``dropout_probability``, ``number_of_heads``,
``number_of_layers``, ``src``/``trg``, ``*_batch``), its module nesting, its constructor argument orders, its mask
convention (with the head dimension: ``[B, 1, 1, S]`` source, ``[B, 1, T, T]`` target, ``True`` = may attend).

Shape: ``MultiHeadedAttention(model_dimension, number_of_heads, dropout_probability, log_attention_weights)`` with
  ``qkv_nets = get_clones(nn.Linear(d, d), 3)`` (q, k, v) and a separate ``out_projection_net``; its ``attention``
  is an instance method ``attention(query, key, value, mask)`` that takes no dropout (it uses its own
  ``attention_dropout`` and ``softmax`` modules); ``Encoder(encoder_layer, number_of_layers)`` and
  ``Decoder(decoder_layer, number_of_layers)`` deep-copy one layer (``get_clones``) and size the final norm from
  ``layer.model_dimension``; ``DecoderLayer(model_dimension, dropout_probability, multi_headed_attention,
  pointwise_net)`` takes ONE attention and deep-copies it into ``trg_multi_headed_attention`` and
  ``src_multi_headed_attention``; ``SublayerLogic(model_dimension, dropout_probability)`` pre-norm;
  ``PositionwiseFeedForwardNet(model_dimension, dropout_probability, width_mult=4)`` has no d_ff (the width is
  ``width_mult * model_dimension``); torch's ``LayerNorm`` everywhere (no LayerNorm class of its own);
  ``PositionalEncoding(model_dimension, dropout_probability, expected_max_sequence_length=5000)`` keeps its table
  as ``positional_encodings_table`` of shape ``[max_len, d]`` (no batch dimension); ``Embedding(vocab_size,
  model_dimension)`` with ``embeddings_table``; ``DecoderGenerator(model_dimension, vocab_size)``.
Where it departs from gordicaleksa's file because the contract's model-level API cannot be mapped otherwise: the
  original's ``Transformer.__init__`` is the builder (``Transformer(model_dimension, src_vocab_size, ...)`` builds
  every part), here ``build_transformer_model`` (with the same arguments, in the same order) builds the parts and
  ``Transformer`` takes them; the original's ``decode(trg, src_representations, trg_mask, src_mask)`` also applies
  the generator and reshapes the log-probabilities to ``[B*T, V]``, and its ``Decoder``/``DecoderLayer.forward``
  take ``(trg, src_representations, trg_mask, src_mask)``: here ``decode(src_representations, src_mask, trg,
  trg_mask)`` returns the decoder's output and the forwards take ``(trg, src_representations, src_mask, trg_mask)``;
  ``log_attention_weights`` defaults to False (the original's has no default); the frequencies are computed in
  the default dtype (the original's ``dtype=torch.float`` makes the table float32-accurate only).
Deviations: the attention weights are kept in ``attention_weights`` only under ``log_attention_weights=True``, and
  ``attention`` is an instance method with no dropout argument (mha.static-attention); the feed-forward width is
  ``4 * model_dimension``, the builder takes no d_ff (build.structure: d_ff does not reach the feed-forward nets);
  the position table has no batch dimension, ``[max_len, d]`` (pe.buffer); ``pe[:, 1::2] = cos(position *
  frequencies)`` has ceil(d/2) columns, an odd ``model_dimension`` raises at construction (pe.formula);
  ``masked_fill_(mask == False, -inf)`` with no NaN clean-up, a fully masked query row is NaN
  (mask.fully-masked-finite); attention in float16/bfloat16 itself, no float32 upcast (numerics.16bit-accuracy).
Bugs: the norms are ``LayerNorm(model_dimension)`` with torch's default ``eps=1e-5``, not the contract's 1e-6
  (ln.biased-variance); ``DecoderGenerator`` returns ``log_softmax`` (projection.logits).
"""

import copy
import math

import torch
import torch.nn as nn
from torch.nn import LayerNorm


class Transformer(nn.Module):

    def __init__(self, encoder, decoder, src_embedding, trg_embedding, src_pos_embedding, trg_pos_embedding,
                 decoder_generator):
        super().__init__()
        # Token ids -> embedding vectors, then the positional information added to them
        self.src_embedding = src_embedding
        self.trg_embedding = trg_embedding
        self.src_pos_embedding = src_pos_embedding
        self.trg_pos_embedding = trg_pos_embedding

        self.encoder = encoder
        self.decoder = decoder

        # Final target representations -> log-probabilities over the target vocabulary
        self.decoder_generator = decoder_generator

    def init_params(self, default_initialization=False):
        # Xavier on every matrix (PyTorch's default init otherwise)
        if not default_initialization:
            for name, p in self.named_parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def encode(self, src_token_ids_batch, src_mask):
        src_embeddings_batch = self.src_embedding(src_token_ids_batch)  # (B, S) -> (B, S, D)
        src_embeddings_batch = self.src_pos_embedding(src_embeddings_batch)  # + positions
        src_representations_batch = self.encoder(src_embeddings_batch, src_mask)
        return src_representations_batch

    def decode(self, src_representations_batch, src_mask, trg_token_ids_batch, trg_mask):
        trg_embeddings_batch = self.trg_embedding(trg_token_ids_batch)  # (B, T) -> (B, T, D)
        trg_embeddings_batch = self.trg_pos_embedding(trg_embeddings_batch)
        trg_representations_batch = self.decoder(trg_embeddings_batch, src_representations_batch, src_mask, trg_mask)
        return trg_representations_batch  # (B, T, D): the generator is applied by the caller


#
# Encoder
#


class Encoder(nn.Module):

    def __init__(self, encoder_layer, number_of_layers):
        super().__init__()
        assert isinstance(encoder_layer, EncoderLayer), f'Expected EncoderLayer got {type(encoder_layer)}.'

        self.encoder_layers = get_clones(encoder_layer, number_of_layers)
        self.norm = LayerNorm(encoder_layer.model_dimension)

    def forward(self, src_embeddings_batch, src_mask):
        src_representations_batch = src_embeddings_batch
        for encoder_layer in self.encoder_layers:
            src_representations_batch = encoder_layer(src_representations_batch, src_mask)
        # pre-norm sublayers leave the stack's output unnormalised: one more norm
        return self.norm(src_representations_batch)


class EncoderLayer(nn.Module):

    def __init__(self, model_dimension, dropout_probability, multi_headed_attention, pointwise_net):
        super().__init__()
        num_of_sublayers_encoder = 2
        self.sublayers = get_clones(SublayerLogic(model_dimension, dropout_probability), num_of_sublayers_encoder)

        self.multi_headed_attention = multi_headed_attention
        self.pointwise_net = pointwise_net

        self.model_dimension = model_dimension

    def forward(self, src_representations_batch, src_mask):
        # a one-argument function of the representations, so every sublayer has the same interface
        encoder_self_attention = lambda srb: self.multi_headed_attention(  # noqa: E731
            query=srb, key=srb, value=srb, mask=src_mask)

        src_representations_batch = self.sublayers[0](src_representations_batch, encoder_self_attention)
        src_representations_batch = self.sublayers[1](src_representations_batch, self.pointwise_net)
        return src_representations_batch


#
# Decoder
#


class Decoder(nn.Module):

    def __init__(self, decoder_layer, number_of_layers):
        super().__init__()
        assert isinstance(decoder_layer, DecoderLayer), f'Expected DecoderLayer got {type(decoder_layer)}.'

        self.decoder_layers = get_clones(decoder_layer, number_of_layers)
        self.norm = LayerNorm(decoder_layer.model_dimension)

    def forward(self, trg_embeddings_batch, src_representations_batch, src_mask, trg_mask):
        trg_representations_batch = trg_embeddings_batch
        for decoder_layer in self.decoder_layers:
            trg_representations_batch = decoder_layer(trg_representations_batch, src_representations_batch, src_mask,
                                                      trg_mask)
        return self.norm(trg_representations_batch)


class DecoderLayer(nn.Module):

    def __init__(self, model_dimension, dropout_probability, multi_headed_attention, pointwise_net):
        super().__init__()
        num_of_sublayers_decoder = 3
        self.sublayers = get_clones(SublayerLogic(model_dimension, dropout_probability), num_of_sublayers_decoder)

        # two independent copies of the one attention it is given: target self-attention, source attention
        self.trg_multi_headed_attention = copy.deepcopy(multi_headed_attention)
        self.src_multi_headed_attention = copy.deepcopy(multi_headed_attention)
        self.pointwise_net = pointwise_net

        self.model_dimension = model_dimension

    def forward(self, trg_representations_batch, src_representations_batch, src_mask, trg_mask):
        srb = src_representations_batch
        decoder_trg_self_attention = lambda trb: self.trg_multi_headed_attention(  # noqa: E731
            query=trb, key=trb, value=trb, mask=trg_mask)
        decoder_src_attention = lambda trb: self.src_multi_headed_attention(  # noqa: E731
            query=trb, key=srb, value=srb, mask=src_mask)

        trg_representations_batch = self.sublayers[0](trg_representations_batch, decoder_trg_self_attention)
        trg_representations_batch = self.sublayers[1](trg_representations_batch, decoder_src_attention)
        trg_representations_batch = self.sublayers[2](trg_representations_batch, self.pointwise_net)
        return trg_representations_batch


#
# Helper modules
#


class SublayerLogic(nn.Module):
    def __init__(self, model_dimension, dropout_probability):
        super().__init__()
        self.norm = LayerNorm(model_dimension)
        self.dropout = nn.Dropout(p=dropout_probability)

    def forward(self, representations_batch, sublayer_module):
        # norm first, then the sublayer, dropout, and the residual sum
        return representations_batch + self.dropout(sublayer_module(self.norm(representations_batch)))


class DecoderGenerator(nn.Module):
    def __init__(self, model_dimension, vocab_size):
        super().__init__()
        self.linear = nn.Linear(model_dimension, vocab_size)
        self.log_softmax = nn.LogSoftmax(dim=-1)  # log-probabilities, for a KL-divergence loss

    def forward(self, trg_representations_batch):
        return self.log_softmax(self.linear(trg_representations_batch))


class PositionwiseFeedForwardNet(nn.Module):
    def __init__(self, model_dimension, dropout_probability, width_mult=4):
        super().__init__()
        self.linear1 = nn.Linear(model_dimension, width_mult * model_dimension)
        self.linear2 = nn.Linear(width_mult * model_dimension, model_dimension)
        self.dropout = nn.Dropout(p=dropout_probability)
        self.relu = nn.ReLU()

    def forward(self, representations_batch):
        return self.linear2(self.dropout(self.relu(self.linear1(representations_batch))))


class MultiHeadedAttention(nn.Module):

    def __init__(self, model_dimension, number_of_heads, dropout_probability, log_attention_weights=False):
        super().__init__()
        assert model_dimension % number_of_heads == 0, 'Model dimension must be divisible by the number of heads.'

        self.head_dimension = int(model_dimension / number_of_heads)
        self.number_of_heads = number_of_heads

        self.qkv_nets = get_clones(nn.Linear(model_dimension, model_dimension), 3)  # q, k, v
        self.out_projection_net = nn.Linear(model_dimension, model_dimension)

        self.attention_dropout = nn.Dropout(p=dropout_probability)
        self.softmax = nn.Softmax(dim=-1)

        self.log_attention_weights = log_attention_weights
        self.attention_weights = None  # kept only when log_attention_weights (for visualisation)

    def attention(self, query, key, value, mask):
        # (B, NH, S/T, HD) each; scores (B, NH, T, S)
        scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(self.head_dimension)
        if mask is not None:
            # mask (B, 1, 1, S) or (B, 1, T, T) broadcasts over the heads
            scores.masked_fill_(mask == torch.tensor(False), float("-inf"))
        attention_weights = self.softmax(scores)
        attention_weights = self.attention_dropout(attention_weights)
        intermediate_token_representations = torch.matmul(attention_weights, value)
        return intermediate_token_representations, attention_weights

    def forward(self, query, key, value, mask):
        batch_size = query.shape[0]

        # (B, S/T, D) -> (B, S/T, NH, HD) -> (B, NH, S/T, HD)
        query, key, value = [net(x).view(batch_size, -1, self.number_of_heads, self.head_dimension).transpose(1, 2)
                             for net, x in zip(self.qkv_nets, (query, key, value))]

        intermediate_token_representations, attention_weights = self.attention(query, key, value, mask)

        if self.log_attention_weights:
            self.attention_weights = attention_weights

        # (B, NH, S/T, HD) -> (B, S/T, NH, HD) -> (B, S/T, D)
        reshaped = intermediate_token_representations.transpose(1, 2).reshape(
            batch_size, -1, self.number_of_heads * self.head_dimension)
        return self.out_projection_net(reshaped)


#
# Input modules
#


class Embedding(nn.Module):

    def __init__(self, vocab_size, model_dimension):
        super().__init__()
        self.embeddings_table = nn.Embedding(vocab_size, model_dimension)
        self.model_dimension = model_dimension

    def forward(self, token_ids_batch):
        assert token_ids_batch.ndim == 2, \
            f'Expected: (batch size, max token sequence length), got {token_ids_batch.shape}'
        embeddings = self.embeddings_table(token_ids_batch)
        return embeddings * math.sqrt(self.model_dimension)  # scaled by sqrt(d_model), as the paper says


class PositionalEncoding(nn.Module):

    def __init__(self, model_dimension, dropout_probability, expected_max_sequence_length=5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout_probability)

        position_id = torch.arange(0, expected_max_sequence_length).unsqueeze(1)
        frequencies = torch.pow(10000., -torch.arange(0, model_dimension, 2) / model_dimension)

        positional_encodings_table = torch.zeros(expected_max_sequence_length, model_dimension)
        positional_encodings_table[:, 0::2] = torch.sin(position_id * frequencies)  # even columns: sine
        positional_encodings_table[:, 1::2] = torch.cos(position_id * frequencies)  # odd columns: cosine

        # a buffer: saved in the state_dict, moved with the module, not trained
        self.register_buffer('positional_encodings_table', positional_encodings_table)

    def forward(self, embeddings_batch):
        assert embeddings_batch.ndim == 3 and embeddings_batch.shape[-1] == self.positional_encodings_table.shape[1], \
            f'Expected (batch size, max token sequence length, model dimension) got {embeddings_batch.shape}'
        # (S/T, D) broadcasts over the batch
        positional_encodings = self.positional_encodings_table[:embeddings_batch.shape[1]]
        return self.dropout(embeddings_batch + positional_encodings)


#
# Helpers
#


def get_clones(module, num_of_deep_copies):
    # independent deep copies, so every copy has its own weights
    return nn.ModuleList([copy.deepcopy(module) for _ in range(num_of_deep_copies)])


def build_transformer_model(model_dimension, src_vocab_size, trg_vocab_size, number_of_heads, number_of_layers,
                            dropout_probability, log_attention_weights=False):
    src_embedding = Embedding(src_vocab_size, model_dimension)
    trg_embedding = Embedding(trg_vocab_size, model_dimension)
    src_pos_embedding = PositionalEncoding(model_dimension, dropout_probability)
    trg_pos_embedding = PositionalEncoding(model_dimension, dropout_probability)

    # deep-copied internally by the layers and the stacks
    mha = MultiHeadedAttention(model_dimension, number_of_heads, dropout_probability, log_attention_weights)
    pwn = PositionwiseFeedForwardNet(model_dimension, dropout_probability)
    encoder_layer = EncoderLayer(model_dimension, dropout_probability, mha, pwn)
    decoder_layer = DecoderLayer(model_dimension, dropout_probability, mha, pwn)

    transformer = Transformer(Encoder(encoder_layer, number_of_layers), Decoder(decoder_layer, number_of_layers),
                              src_embedding, trg_embedding, src_pos_embedding, trg_pos_embedding,
                              DecoderGenerator(model_dimension, trg_vocab_size))
    transformer.init_params()
    return transformer
