"""Causal_mask uses tril(diagonal=1): position t also sees t + 1."""

from tests.negative_controls._base import install

BUG = "causal_mask uses tril(diagonal=1): position t also sees t + 1"
COMPONENT = "mask helpers"
CLAUSES = ("extra.mask-helpers", "mask.zero-weight")

install(globals(), [
    ("masks.py", "dtype=torch.bool, device=device))", "dtype=torch.bool, device=device), diagonal=1)"),
])
