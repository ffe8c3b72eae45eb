"""(blog) the positional table is computed in float32: a float64 model carries ~1e-7 errors."""

from tests.negative_controls._base import install

BUG = "(blog) the positional table is computed in float32: a float64 model carries ~1e-7 errors"
COMPONENT = "positional table"
CLAUSES = ("pe.formula",)

install(globals(), [
    ("model.py", "dtype=torch.float64", "dtype=torch.float32", 3),
])
