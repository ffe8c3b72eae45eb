"""Heads merged with view(B, Lq, d) without transposing (B, h, Lq, d_k) back first."""

from tests.negative_controls._base import install

BUG = "heads merged with view(B, Lq, d) without transposing (B, h, Lq, d_k) back first"
COMPONENT = "attention head split/merge"
CLAUSES = ("mha.formula",)

install(globals(), [
    ("model.py",
     "x = x.transpose(1, 2).contiguous().view(batch, len_q, self.d_model)",
     "x = x.contiguous().view(batch, len_q, self.d_model)"),
])
