"""The feed-forward block's dropout is applied to its output, not to the hidden activation."""

from tests.negative_controls._base import install

BUG = "FeedForwardBlock applies its dropout to the output linear_2(relu(linear_1(x))), not to the hidden activation"
COMPONENT = "dropout"
CLAUSES = ("ffn.formula",)

install(globals(), [
    ("model.py", "return self.linear_2(self.dropout(_relu(self.linear_1(x))))",
     "return self.dropout(self.linear_2(_relu(self.linear_1(x))))"),
])
