"""LayerNorm normalises float16/bfloat16 in the low precision instead of float32."""

from tests.negative_controls._base import install

BUG = "LayerNorm normalises float16/bfloat16 in the low precision instead of float32"
COMPONENT = "dtype/device handling"
CLAUSES = ("numerics.16bit-accuracy", "numerics.16bit-range")

install(globals(), [
    ("model.py", "xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x", "xf = x"),
    # the means as a from-scratch model writes them (.mean(), one rounding; not the base's float32-only sum / d)
    ("model.py", ".sum(dim=-1, keepdim=True) / d", ".mean(dim=-1, keepdim=True)", 3),
])
