"""Decoder self-attention ignores tgt_mask (sees future tokens)."""

from tests.negative_controls._base import install

BUG = "decoder self-attention ignores tgt_mask (sees future tokens)"
COMPONENT = "decoder wiring"
CLAUSES = ("decoder.block", "mask.zero-weight")

install(globals(), [
    ("model.py", "self.self_attention_block(x, x, x, tgt_mask)", "self.self_attention_block(x, x, x, None)"),
])
