"""Causal_mask uses triu: position t sees the future, not the past."""

from tests.negative_controls._base import install

BUG = "causal_mask uses triu: position t sees the future, not the past"
COMPONENT = "mask helpers"
CLAUSES = ("extra.mask-helpers", "mask.zero-weight")

install(globals(), [
    ("masks.py", "torch.tril(", "torch.triu("),
])
