"""Scale the queries by 1/sqrt(d_k) before the product (other rounding than scaling the scores)."""

from tests.negative_controls._base import install

VARIANT = "queries scaled by 1/sqrt(d_k) before q @ k^T instead of scaling the scores"
COMPONENT = "attention"

install(globals(), [
    ("model.py", "        scores = query @ key.transpose(-2, -1)  # (B, h, Lq, Lk)\n"
                 "        scores /= math.sqrt(d_k)",
     "        scores = (query * (1.0 / math.sqrt(d_k))) @ key.transpose(-2, -1)  # (B, h, Lq, Lk)\n"
     "        pass"),
])
