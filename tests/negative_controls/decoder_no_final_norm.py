"""Decoder returns the last block's output without its final LayerNorm."""

from tests.negative_controls._base import install

BUG = "Decoder returns the last block's output without its final LayerNorm"
COMPONENT = "final norms"
CLAUSES = ("decoder.stack",)

install(globals(), [
    ("model.py",
     "x = layer(x, encoder_output, src_mask, tgt_mask)\n        return self.norm(x)",
     "x = layer(x, encoder_output, src_mask, tgt_mask)\n        return x"),
])
