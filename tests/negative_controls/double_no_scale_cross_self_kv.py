"""Two independent bugs (issue 31): attention without 1/sqrt(d_k), and a decoder whose cross-attention takes its keys
and values from the decoder input. Its card must show two roots, one per bug (``ROOTS``)."""

from tests.negative_controls._base import install

BUG = ("two bugs: attention scores not divided by sqrt(d_k), and decoder cross-attention taking keys/values from "
       "the decoder input")
COMPONENT = "decoder wiring"
ROOTS = (("mha.formula", "mha.static-attention"), ("decoder.block",))
CLAUSES = tuple(c for group in ROOTS for c in group)

install(globals(), [
    ("model.py", "math.sqrt(d_k)", "1.0"),
    ("model.py",
     "self.cross_attention_block(x, encoder_output, encoder_output, src_mask)",
     "self.cross_attention_block(x, x, x, src_mask)"),
])
