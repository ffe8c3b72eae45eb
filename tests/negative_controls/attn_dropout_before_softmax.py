"""Attention dropout applied to the scores before the softmax, not to the weights."""

from tests.negative_controls._base import Line, install

BUG = "attention dropout applied to the scores before the softmax, not to the weights"
COMPONENT = "dropout"
CLAUSES = ("dropout.semantics", "mha.formula", "mha.static-attention")

install(globals(), [
    ("model.py", Line("weights = dropout(weights)"), "pass  # dropout moved onto the scores, before the softmax"),
    ("model.py", "scores.softmax(dim=-1)", "(scores if dropout is None else dropout(scores)).softmax(dim=-1)", 2),
])
