"""Encoder self-attention ignores src_mask (attends to padding)."""

from tests.negative_controls._base import install

BUG = "encoder self-attention ignores src_mask (attends to padding)"
COMPONENT = "encoder wiring"
CLAUSES = ("encoder.block", "mask.zero-weight")

install(globals(), [
    ("model.py", "self.self_attention_block(x, x, x, src_mask)", "self.self_attention_block(x, x, x, None)"),
])
