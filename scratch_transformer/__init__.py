"""A from-scratch encoder-decoder Transformer with the blog walkthrough's public contract."""

from .masks import causal_mask, padding_mask
from .model import (
    Decoder,
    DecoderBlock,
    Encoder,
    EncoderBlock,
    FeedForwardBlock,
    InputEmbeddings,
    LayerNormalization,
    MultiHeadAttentionBlock,
    PositionalEncoding,
    ProjectionLayer,
    ResidualConnection,
    Transformer,
    build_transformer,
)

__all__ = [
    "InputEmbeddings", "PositionalEncoding", "LayerNormalization", "FeedForwardBlock", "MultiHeadAttentionBlock",
    "ResidualConnection", "EncoderBlock", "Encoder", "DecoderBlock", "Decoder", "ProjectionLayer", "Transformer",
    "build_transformer", "causal_mask", "padding_mask",
]
__version__ = "0.1.0"
