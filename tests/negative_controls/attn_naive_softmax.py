"""Attention softmax as exp(s) / sum(exp(s)), no max subtracted: inf/NaN on large scores."""

from tests.negative_controls._base import install

BUG = "attention softmax as exp(s) / sum(exp(s)), no max subtracted: inf/NaN on large scores"
COMPONENT = "numerical stability"
CLAUSES = ("mha.formula", "mha.static-attention", "numerics.float64", "numerics.float32")

install(globals(), [
    ("model.py", "scores.softmax(dim=-1)", "(scores.exp() / scores.exp().sum(dim=-1, keepdim=True))", 2),
])
