"""Padding_mask masks the query axis ([B, 1, L, 1]) instead of the key axis."""

from tests.negative_controls._base import install

BUG = "padding_mask masks the query axis ([B, 1, L, 1]) instead of the key axis"
COMPONENT = "mask helpers"
CLAUSES = ("extra.mask-helpers", "mask.zero-weight")

install(globals(), [
    ("masks.py", "[:, None, None, :]", "[:, None, :, None]"),
])
