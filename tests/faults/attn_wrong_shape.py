"""Fault: ``MultiHeadAttentionBlock.forward`` drops the last query position: [B, Lq - 1, d] instead of [B, Lq, d]."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", "return self.w_o(x)", "return self.w_o(x)[:, :-1]"),
])
