"""Attention scores are not divided by sqrt(d_k)."""

from tests.negative_controls._base import install

BUG = "attention scores are not divided by sqrt(d_k)"
COMPONENT = "attention scaling"

install(globals(), [
    ("model.py",
     "scores = (query @ key.transpose(-2, -1)) / math.sqrt(d_k)",
     "scores = (query @ key.transpose(-2, -1))"),
])
