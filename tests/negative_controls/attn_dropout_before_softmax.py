"""Attention dropout applied to the scores before the softmax, not to the weights."""

from tests.negative_controls._base import install

BUG = "attention dropout applied to the scores before the softmax, not to the weights"
COMPONENT = "dropout"

install(globals(), [
    ("model.py",
     "scores = (query @ key.transpose(-2, -1)) / math.sqrt(d_k)  # (B, h, Lq, Lk)\n",
     "scores = (query @ key.transpose(-2, -1)) / math.sqrt(d_k)  # (B, h, Lq, Lk)\n"
     "        scores = dropout(scores) if dropout is not None else scores\n"),
    ("model.py", "        if dropout is not None:\n            weights = dropout(weights)\n", ""),
])
