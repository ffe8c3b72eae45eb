"""FeedForwardBlock has no ReLU between the two linears."""

from tests.negative_controls._base import install

BUG = "FeedForwardBlock has no ReLU between the two linears"
COMPONENT = "feed-forward"
CLAUSES = ("ffn.formula",)

install(globals(), [
    ("model.py", "        hidden = torch.relu(hidden) if hidden.requires_grad else torch.relu_(hidden)\n", ""),
])
