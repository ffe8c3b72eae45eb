"""The residual's dropout is applied to the sublayer's input, not to its output (same shape, same rate: identical in
eval mode)."""

from tests.negative_controls._base import install

BUG = "ResidualConnection applies its dropout to the normed input, x + sublayer(dropout(norm(x))), not to the branch"
COMPONENT = "dropout"
CLAUSES = ("residual.pre-norm",)

install(globals(), [
    ("model.py", "return x + self.dropout(sublayer(self.norm(x)))", "return x + sublayer(self.dropout(self.norm(x)))"),
])
