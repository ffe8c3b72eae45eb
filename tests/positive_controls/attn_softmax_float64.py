"""Softmax computed in float64 inside attention, then cast back (more accurate than the dtype's own)."""

from tests.negative_controls._base import Line, install

VARIANT = "attention softmax computed in float64 and cast back to the scores' dtype"
COMPONENT = "attention"

install(globals(), [
    ("model.py", Line("weights = scores.softmax(dim=-1)"),
     "weights = scores.double().softmax(dim=-1).to(scores.dtype)", 2),
])
