"""Fault: ``MultiHeadAttentionBlock.forward`` returns a tuple ``(output, attention weights)`` where the contract wants
the output tensor."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", "return self.w_o(x)", "return self.w_o(x), self.attention_scores"),
])
