"""The blog's ``masked_fill(mask == 0, fill)`` with the fill made dtype-safe: fully masked rows get uniform weights."""

from tests.negative_controls._base import Line, install

VARIANT = ("the blog's masked_fill(mask == 0, finfo(dtype).min), no special case: a fully masked row gets uniform "
           "weights (finite, as the contract asks)")
COMPONENT = "attention masking"

install(globals(), [
    ("model.py", Line("scores += torch.zeros_like(mask"),
     "scores = scores.masked_fill(mask == 0, torch.finfo(scores.dtype).min)"),
    ("model.py", Line("weights = weights * seen"), "pass  # the blog keeps the softmax's uniform weights"),
])
