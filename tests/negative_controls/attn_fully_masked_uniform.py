"""(blog) a fully masked query row gets uniform weights over masked keys instead of zeros."""

from tests.negative_controls._base import Line, install

BUG = "(blog) a fully masked query row gets uniform weights over masked keys instead of zeros"
COMPONENT = "attention masking"
CLAUSES = ("strict.fully-masked-zero",)
TIER = "strict"  # legal under the contract: only a strict clause (this package's own choice) forbids it

install(globals(), [
    ("model.py", Line("weights = weights * seen"), "pass  # fully masked rows keep the softmax's uniform weights"),
])
