"""FeedForwardBlock's first linear has no bias."""

from tests.negative_controls._base import install

BUG = "FeedForwardBlock's first linear has no bias"
COMPONENT = "feed-forward"
CLAUSES = ("ffn.formula", "api.attributes")

install(globals(), [
    ("model.py",
     "nn.Linear(d_model, d_ff, device=device, dtype=dtype)",
     "nn.Linear(d_model, d_ff, bias=False, device=device, dtype=dtype)"),
])
