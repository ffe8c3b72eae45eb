"""Two independent bugs (issue 31): a feed-forward without its ReLU, and an Encoder without its final LayerNorm.
Its card must show two roots, one per bug (``ROOTS``)."""

from tests.negative_controls._base import install

BUG = "two bugs: FeedForwardBlock without its ReLU, and Encoder without its final LayerNorm"
COMPONENT = "final norms"
ROOTS = (("ffn.formula",), ("encoder.stack",))
CLAUSES = tuple(c for group in ROOTS for c in group)

install(globals(), [
    ("model.py", "self.dropout(_relu(self.linear_1(x)))", "self.dropout(self.linear_1(x))"),
    ("model.py", "x = layer(x, mask)\n        return self.norm(x)", "x = layer(x, mask)\n        return x"),
])
