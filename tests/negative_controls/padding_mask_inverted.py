"""Padding_mask is True at the padding (tokens == pad_id)."""

from tests.negative_controls._base import install

BUG = "padding_mask is True at the padding (tokens == pad_id)"
COMPONENT = "mask helpers"
CLAUSES = ("extra.mask-helpers", "mask.zero-weight")

install(globals(), [
    ("masks.py", "(tokens != pad_id)", "(tokens == pad_id)"),
])
