"""Attention() returns (and attention_scores keeps) the raw scores, not the softmax weights."""

from tests.negative_controls._base import install

BUG = "attention() returns (and attention_scores keeps) the raw scores, not the softmax weights"
COMPONENT = "attention weights"
CLAUSES = ("mha.static-attention",)

install(globals(), [
    ("model.py", "return weights @ value, weights", "return weights @ value, scores"),
])
