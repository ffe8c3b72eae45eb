"""LayerNorm normalises float16/bfloat16 in the low precision instead of float32."""

from tests.negative_controls._base import install

BUG = "LayerNorm normalises float16/bfloat16 in the low precision instead of float32"
COMPONENT = "dtype/device handling"
CLAUSES = ("numerics.16bit-accuracy", "numerics.16bit-range")

install(globals(), [
    ("model.py", "xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x", "xf = x"),
])
