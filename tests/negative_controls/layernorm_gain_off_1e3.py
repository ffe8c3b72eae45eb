"""LayerNorm multiplies by alpha * 1.001: a gain off by 0.1%."""

from tests.negative_controls._base import install

BUG = "LayerNorm scales by alpha * 1.001 in forward: the gain is off by 1e-3 (0.1%)"
COMPONENT = "layer norm"
CLAUSES = ("ln.biased-variance",)

install(globals(), [
    ("model.py", "normed, self.alpha.float())", "normed, self.alpha.float() * 1.001)"),
    ("model.py", "normed, self.alpha)  #", "normed, self.alpha * 1.001)  #"),
])
