"""Fault: a constructor typo: ``MultiHeadAttentionBlock.__init__`` reads ``self.heads``, never set
(``AttributeError`` at construction)."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", "self.d_k = d_model // h", "self.d_k = d_model // self.heads"),
])
