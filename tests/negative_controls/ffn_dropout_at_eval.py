"""FeedForwardBlock uses F.dropout(training=True): dropout also in eval mode."""

from tests.negative_controls._base import install

BUG = "FeedForwardBlock uses F.dropout(training=True): dropout also in eval mode"
COMPONENT = "dropout"
CLAUSES = ("ffn.formula", "dropout.semantics")

install(globals(), [
    ("model.py",
     "self.linear_2(self.dropout(hidden))",
     "self.linear_2(nn.functional.dropout(hidden, self.dropout.p, training=True))"),
])
