"""(blog) LayerNorm divides by the unbiased std plus eps: (x - mean) / (std + eps)."""

from tests.negative_controls._base import install

BUG = "(blog) LayerNorm divides by the unbiased std plus eps: (x - mean) / (std + eps)"
COMPONENT = "layer norm"
CLAUSES = ("ln.biased-variance",)

install(globals(), [
    ("model.py", "torch.rsqrt(var + self.eps)", "(1 / (xf.std(dim=-1, keepdim=True) + self.eps))"),
])
