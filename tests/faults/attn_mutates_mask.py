"""Fault: attention inverts the caller's mask in place (``mask.logical_not_()``) to build the additive bias, and
inverts it back afterwards: the outputs are the correct model's, but the caller's tensor is written twice (its
version counter moves; an integer mask comes back as 0/1; a mask shared with another thread is wrong meanwhile)."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", "masked_fill_(mask.logical_not(), torch.finfo(scores.dtype).min)",
     "masked_fill_(mask.logical_not_(), torch.finfo(scores.dtype).min)\n            mask.logical_not_()"),
])
