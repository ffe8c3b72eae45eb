"""The dropout check tests the range only: a string such as ``"0.1"`` passes ``float()`` and is accepted."""

from tests.negative_controls._base import Line, install

BUG = "dropout checked by range only: a non-numeric dropout (\"0.1\") is accepted instead of refused with a TypeError"
COMPONENT = "dropout"
CLAUSES = ("strict.bad-inputs",)
TIER = "strict"  # bad-input hardening is this package's own choice (strict.bad-inputs)

install(globals(), [
    ("model.py", Line("check_dropout(dropout)"),
     'if not 0.0 <= float(dropout) < 1.0:\n    raise ValueError(f"dropout={dropout} is outside [0, 1)")', 4),
])
