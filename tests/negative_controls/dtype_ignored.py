"""Build_transformer drops dtype=: parameters are created in float32 whatever is asked."""

from tests.negative_controls._base import install

BUG = "build_transformer drops dtype=: parameters are created in float32 whatever is asked"
COMPONENT = "dtype/device handling"
CLAUSES = ("extra.factory-kwargs", "module.state", "numerics.float64")

install(globals(), [
    ("model.py", "kw = {\"device\": device, \"dtype\": dtype}", "kw = {\"device\": device}"),
])
