"""Cross-attention takes its keys from the encoder output but its values from the decoder input (lengths differ
whenever source and target do)."""

from tests.negative_controls._base import install

BUG = "decoder cross-attention takes keys from the encoder output and values from the decoder input"
COMPONENT = "decoder wiring"
CLAUSES = ("decoder.block",)

install(globals(), [
    ("model.py",
     "self.cross_attention_block(x, encoder_output, encoder_output, src_mask)",
     "self.cross_attention_block(x, encoder_output, x, src_mask)"),
])
