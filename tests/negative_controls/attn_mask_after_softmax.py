"""Masked keys zeroed after the softmax instead of before: rows no longer sum to 1."""

from tests.negative_controls._base import install

BUG = "masked keys zeroed after the softmax instead of before: rows no longer sum to 1"
COMPONENT = "attention masking"

install(globals(), [
    ("model.py",
     "weights = (scores + bias).softmax(dim=-1) * seen",
     "weights = scores.softmax(dim=-1).masked_fill(mask == 0, 0.0)"),
])
