"""Fault: ``MultiHeadAttentionBlock.__init__`` raises ``NotImplementedError``: no model can be built."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", "if d_model % h != 0:",
     'raise NotImplementedError("MultiHeadAttentionBlock is not written yet")\n        if d_model % h != 0:'),
])
