"""Masked keys zeroed after the softmax instead of before: rows no longer sum to 1."""

from tests.negative_controls._base import Line, install

BUG = "masked keys zeroed after the softmax instead of before: rows no longer sum to 1"
COMPONENT = "attention masking"
CLAUSES = ("mha.formula", "mha.static-attention", "mask.zero-weight")

install(globals(), [
    ("model.py", Line("scores += torch.zeros_like(mask"), "pass  # no mask on the scores"),
    ("model.py",
     Line("seen = mask.any("),
     "weights = weights.masked_fill(mask == 0, 0.0)\nseen = mask.any(dim=-1, keepdim=True)"),
])
