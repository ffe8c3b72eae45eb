"""LayerNorm variance as E[x^2] - E[x]^2 (one pass): cancels under a large common offset."""

from tests.negative_controls._base import Line, install

BUG = "LayerNorm variance as E[x^2] - E[x]^2 (one pass): cancels under a large common offset"
COMPONENT = "numerical stability"
CLAUSES = ("ln.biased-variance", "numerics.float32", "numerics.float64")

install(globals(), [
    ("model.py", Line("var = "), "var = (xf * xf).mean(dim=-1, keepdim=True) - mean * mean"),
])
