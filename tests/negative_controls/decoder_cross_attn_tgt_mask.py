"""Decoder cross-attention masked with tgt_mask instead of src_mask."""

from tests.negative_controls._base import install

BUG = "decoder cross-attention masked with tgt_mask instead of src_mask"
COMPONENT = "decoder wiring"
CLAUSES = ("decoder.block",)

install(globals(), [
    ("model.py",
     "self.cross_attention_block(x, encoder_output, encoder_output, src_mask)",
     "self.cross_attention_block(x, encoder_output, encoder_output, tgt_mask)"),
])
