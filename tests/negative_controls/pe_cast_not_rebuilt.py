"""PositionalEncoding casts its table on .double()/.to() instead of rebuilding it from the formula."""

from tests.negative_controls._base import install

BUG = "PositionalEncoding casts its table on .double()/.to() instead of rebuilding it from the formula"
COMPONENT = "dtype/device handling"
CLAUSES = ("strict.pe-rebuilt",)
TIER = "strict"  # legal under the contract: only a strict clause (this package's own choice) forbids it

install(globals(), [
    ("model.py", "if self.pe.dtype != old.dtype or self.pe.device != old.device:", "if False:  # a plain buffer cast"),
])
