"""Values projected from the key input: w_v(k) instead of w_v(v)."""

from tests.negative_controls._base import install

BUG = "values projected from the key input: w_v(k) instead of w_v(v)"
COMPONENT = "attention projections"
CLAUSES = ("mha.formula",)

install(globals(), [
    ("model.py", "value = self.w_v(v)", "value = self.w_v(k)"),
])
