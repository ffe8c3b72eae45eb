"""Attention's dropout is applied to the weighted values, not to the weights (the kept weights are undropped)."""

from tests.negative_controls._base import install

BUG = "attention applies its dropout to weights @ value, not to the weights"
COMPONENT = "dropout"
CLAUSES = ("mha.formula", "mha.static-attention", "dropout.semantics")

install(globals(), [
    ("model.py", "            weights = dropout(weights)\n        return weights @ value, weights",
     "            return dropout(weights @ value), weights\n        return weights @ value, weights"),
])
