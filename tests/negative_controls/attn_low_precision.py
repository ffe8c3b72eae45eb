"""Attention computed in float16/bfloat16 itself instead of float32 (the softmax backward cancels)."""

from tests.negative_controls._base import install

BUG = "attention computed in float16/bfloat16 itself instead of float32 (the softmax backward cancels)"
COMPONENT = "dtype/device handling"
CLAUSES = ("numerics.16bit-accuracy", "numerics.16bit-range")

install(globals(), [
    ("model.py", "if query.dtype in (torch.float16, torch.bfloat16):", "if False:  # attend in the input dtype"),
])
