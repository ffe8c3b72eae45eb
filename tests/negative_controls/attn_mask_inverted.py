"""Mask polarity inverted: masked_fill(mask == 1, ...) hides the visible keys."""

from tests.negative_controls._base import install

BUG = "mask polarity inverted: masked_fill(mask == 1, ...) hides the visible keys"
COMPONENT = "attention masking"
CLAUSES = ("mask.semantics", "mask.zero-weight")

install(globals(), [
    ("model.py", "masked_fill_(mask.logical_not(),", "masked_fill_(mask == 1,"),
])
