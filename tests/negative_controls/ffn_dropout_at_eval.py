"""FeedForwardBlock uses F.dropout(training=True): dropout also in eval mode."""

from tests.negative_controls._base import install

BUG = "FeedForwardBlock uses F.dropout(training=True): dropout also in eval mode"
COMPONENT = "dropout"
CLAUSES = ("ffn.formula", "dropout.semantics")

install(globals(), [
    ("model.py",
     "self.dropout(_relu(self.linear_1(x)))",
     "nn.functional.dropout(_relu(self.linear_1(x)), self.dropout.p, training=True)"),
])
