"""Attention scores are not divided by sqrt(d_k)."""

from tests.negative_controls._base import install

BUG = "attention scores are not divided by sqrt(d_k)"
COMPONENT = "attention scaling"
CLAUSES = ("mha.formula", "mha.static-attention")

install(globals(), [
    ("model.py", "math.sqrt(d_k)", "1.0"),
])
