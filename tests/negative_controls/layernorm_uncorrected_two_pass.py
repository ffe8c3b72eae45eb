"""LayerNorm centres once (``x - mean``) without removing the first mean's rounding: contract-legal, less accurate."""

from tests.negative_controls._base import install

BUG = "LayerNorm without the second centring pass: float32 error grows with the rows' offset (|mean| / std roundings)"
COMPONENT = "layer norm"
CLAUSES = ("strict.ln-offset-accurate",)
TIER = "strict"  # backward stable, so within the contract's conditioning bound: strict.ln-offset-accurate forbids it

install(globals(), [
    ("model.py", "        centred = centred - centred.sum(dim=-1, keepdim=True) / d\n", ""),
])
