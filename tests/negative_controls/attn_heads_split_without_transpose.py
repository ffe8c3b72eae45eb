"""Heads split with view(B, h, L, d_k) instead of view(B, L, h, d_k).transpose(1, 2)."""

from tests.negative_controls._base import install

BUG = "heads split with view(B, h, L, d_k) instead of view(B, L, h, d_k).transpose(1, 2)"
COMPONENT = "attention head split/merge"
CLAUSES = ("mha.formula",)

install(globals(), [
    ("model.py", "view(batch, len_q, self.h, self.d_k).transpose(1, 2)", "view(batch, self.h, len_q, self.d_k)"),
    ("model.py", "view(batch, len_k, self.h, self.d_k).transpose(1, 2)", "view(batch, self.h, len_k, self.d_k)", 2),
])
