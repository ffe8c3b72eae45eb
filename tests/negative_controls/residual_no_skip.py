"""ResidualConnection drops the skip: returns sublayer(norm(x)) without + x."""

from tests.negative_controls._base import install

BUG = "ResidualConnection drops the skip: returns sublayer(norm(x)) without + x"
COMPONENT = "residual order"
CLAUSES = ("residual.pre-norm",)

install(globals(), [
    ("model.py", "return x + self.dropout(sublayer(self.norm(x)))", "return self.dropout(sublayer(self.norm(x)))"),
])
