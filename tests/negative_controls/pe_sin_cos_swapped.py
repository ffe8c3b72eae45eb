"""Positional table has cos on even columns and sin on odd ones."""

from tests.negative_controls._base import install

BUG = "positional table has cos on even columns and sin on odd ones"
COMPONENT = "positional table"
CLAUSES = ("pe.formula",)

install(globals(), [
    ("model.py", "pe[:, 0::2] = torch.sin(angle)", "pe[:, 0::2] = torch.cos(angle)"),
    ("model.py",
     "pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])",
     "pe[:, 1::2] = torch.sin(angle[:, : d_model // 2])"),
])
