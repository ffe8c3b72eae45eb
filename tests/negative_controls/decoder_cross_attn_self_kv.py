"""Decoder cross-attention takes keys/values from the decoder input, not the encoder output."""

from tests.negative_controls._base import install

BUG = "decoder cross-attention takes keys/values from the decoder input, not the encoder output"
COMPONENT = "decoder wiring"
CLAUSES = ("decoder.block",)

install(globals(), [
    ("model.py",
     "self.cross_attention_block(x, encoder_output, encoder_output, src_mask)",
     "self.cross_attention_block(x, x, x, src_mask)"),
])
