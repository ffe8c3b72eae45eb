"""Attention scores divided by sqrt(d_model) instead of sqrt(d_k) (same when h = 1)."""

from tests.negative_controls._base import install

BUG = "attention scores divided by sqrt(d_model) instead of sqrt(d_k) (same when h = 1)"
COMPONENT = "attention scaling"
CLAUSES = ("mha.formula", "mha.static-attention")

install(globals(), [
    ("model.py", "math.sqrt(d_k)", "math.sqrt(d_k * query.shape[1])"),
])
