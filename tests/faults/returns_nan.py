"""Fault: ``ProjectionLayer`` returns NaN logits (so does the whole model)."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", "return self.proj(x)", 'return self.proj(x) * float("nan")'),
])
