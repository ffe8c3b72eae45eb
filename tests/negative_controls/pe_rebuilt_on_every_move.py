"""PositionalEncoding rebuilds its table on every move, a no-op ``.to()`` included, discarding a loaded ``pe``."""

from tests.negative_controls._base import install

BUG = "PositionalEncoding rebuilds pe on every .to()/.float(), even a no-op one, overwriting the loaded state_dict"
COMPONENT = "positional table"
CLAUSES = ("pe.buffer", "module.state")

install(globals(), [
    ("model.py", "if self.pe.dtype != old.dtype or self.pe.device != old.device:", "if True:  # rebuild on every move"),
])
