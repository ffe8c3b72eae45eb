"""LayerNormalization insists on [B, L, d] input, refusing the [d] or [a, b, c, d] inputs nn.LayerNorm takes."""

from tests.negative_controls._base import install

BUG = "LayerNormalization refuses any input that is not [B, L, d] (nn.LayerNorm normalises the last dim of any shape)"
COMPONENT = "layer norm"
CLAUSES = ("strict.any-leading-shape",)
TIER = "strict"  # the contract's tests feed [B, L, d]: the strict clause strict.any-leading-shape asks for any [..., d]

install(globals(), [
    ("model.py", 'check_features("x", x, self.features)', 'check_features("x", x, self.features, ndim=3)'),
])
