"""The positional encoding forgets its dropout: x + pe, not dropout(x + pe)."""

from tests.negative_controls._base import install

BUG = "PositionalEncoding returns x + pe[:, :L] without its dropout"
COMPONENT = "dropout"
CLAUSES = ("pe.add", "dropout.semantics")

install(globals(), [
    ("model.py", "return self.dropout(x + self.pe[:, :length])", "return x + self.pe[:, :length]"),
])
