"""Fault: ``MultiHeadAttentionBlock`` does not keep its attention weights: ``attention_scores`` stays None."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", "x, self.attention_scores = MultiHeadAttentionBlock.attention(",
     "x, _ = MultiHeadAttentionBlock.attention("),
])
