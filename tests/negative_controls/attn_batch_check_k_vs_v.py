"""The attention block compares the batch sizes of k and v with each other, not with q's."""

from tests.negative_controls._base import install

BUG = "attention checks k's batch against v's only: a q/k batch mismatch fails late, in a matmul, not with its message"
COMPONENT = "attention projections"
CLAUSES = ("strict.bad-inputs",)
TIER = "strict"  # bad-input hardening is this package's own choice (strict.bad-inputs)

install(globals(), [
    ("model.py", "if k.shape[0] != batch or v.shape[0] != batch:", "if k.shape[0] != v.shape[0]:"),
])
