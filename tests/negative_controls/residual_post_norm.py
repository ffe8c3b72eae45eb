"""Post-norm residual norm(x + sublayer(x)) instead of pre-norm x + sublayer(norm(x))."""

from tests.negative_controls._base import install

BUG = "post-norm residual norm(x + sublayer(x)) instead of pre-norm x + sublayer(norm(x))"
COMPONENT = "residual order"
CLAUSES = ("residual.pre-norm",)

install(globals(), [
    ("model.py", "return x + self.dropout(sublayer(self.norm(x)))", "return self.norm(x + self.dropout(sublayer(x)))"),
])
