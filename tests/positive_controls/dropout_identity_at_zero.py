"""A dropout of rate 0 is ``nn.Identity()`` (a common shortcut): a model built with ``dropout=0`` draws no dropout at
all, in train mode too; with ``p > 0`` it is the base model."""

from tests.negative_controls._base import install

VARIANT = "every dropout module is nn.Identity() when its rate is 0 (nn.Dropout(p) otherwise)"
COMPONENT = "dropout"

install(globals(), [
    ("model.py", "self.dropout = nn.Dropout(dropout)", "self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()",
     4),
])
