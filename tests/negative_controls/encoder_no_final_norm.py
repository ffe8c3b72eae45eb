"""Encoder returns the last block's output without its final LayerNorm."""

from tests.negative_controls._base import install

BUG = "Encoder returns the last block's output without its final LayerNorm"
COMPONENT = "final norms"
CLAUSES = ("encoder.stack",)

install(globals(), [
    ("model.py", "x = layer(x, mask)\n        return self.norm(x)", "x = layer(x, mask)\n        return x"),
])
