"""Attention softmax over the query axis (dim=-2) instead of the keys."""

from tests.negative_controls._base import install

BUG = "attention softmax over the query axis (dim=-2) instead of the keys"
COMPONENT = "attention softmax"
CLAUSES = ("mha.formula", "mha.static-attention")

install(globals(), [
    ("model.py", "softmax(dim=-1)", "softmax(dim=-2)", 2),
])
