"""FeedForwardBlock has no ReLU between the two linears."""

from tests.negative_controls._base import install

BUG = "FeedForwardBlock has no ReLU between the two linears"
COMPONENT = "feed-forward"
CLAUSES = ("ffn.formula",)

install(globals(), [
    ("model.py", "self.dropout(_relu(self.linear_1(x)))", "self.dropout(self.linear_1(x))"),
])
