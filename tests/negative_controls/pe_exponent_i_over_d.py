"""Positional frequencies use 10000^(i/d) instead of 10000^(2i/d)."""

from tests.negative_controls._base import install

BUG = "positional frequencies use 10000^(i/d) instead of 10000^(2i/d)"
COMPONENT = "positional table"
CLAUSES = ("pe.formula",)

install(globals(), [
    ("model.py", "torch.pow(10000.0, two_i / d_model)", "torch.pow(10000.0, (two_i / 2) / d_model)"),
])
