"""LayerNorm stores eps = features (d_model): a learner's ``LayerNormalization(eps)`` signature called with
``features``, so every norm divides by sqrt(var + d_model)."""

from tests.negative_controls._base import install

BUG = "LayerNorm stores eps = float(features) (d_model), as LayerNormalization(eps) called with features does"
COMPONENT = "layer norm"
CLAUSES = ("ln.biased-variance",)

install(globals(), [
    ("model.py", "        self.eps = eps\n", "        self.eps = float(features)\n"),
])
