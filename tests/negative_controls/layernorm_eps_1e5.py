"""LayerNorm's default eps is nn.LayerNorm's 1e-5, not the contract's 1e-6."""

from tests.negative_controls._base import install

BUG = "LayerNorm's default eps is 1e-5 (nn.LayerNorm's), not the contract's 1e-6"
COMPONENT = "layer norm"
CLAUSES = ("ln.biased-variance",)

install(globals(), [
    ("model.py", "def __init__(self, features: int, eps: float = 1e-6,",
     "def __init__(self, features: int, eps: float = 1e-5,"),
])
