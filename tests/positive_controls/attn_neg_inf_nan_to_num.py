"""Masking by ``masked_fill(-inf)``, softmax, then ``nan_to_num``: fully masked rows come out as zeros."""

from tests.negative_controls._base import Line, install

VARIANT = "masked_fill(mask == 0, -inf), softmax, nan_to_num(0): NaN rows of fully masked queries become zeros"
COMPONENT = "attention masking"

install(globals(), [
    ("model.py", Line("scores += torch.zeros_like(mask"),
     "scores = scores.masked_fill(mask == 0, float('-inf'))"),
    ("model.py", "            weights = scores.softmax(dim=-1)\n            seen = mask.any(dim=-1, keepdim=True)",
     "            weights = torch.nan_to_num(scores.softmax(dim=-1), nan=0.0)\n"
     "            seen = mask.any(dim=-1, keepdim=True)"),
    ("model.py", Line("weights = weights * seen"), "pass  # nan_to_num already zeroed them"),
])
