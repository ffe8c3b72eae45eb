"""ProjectionLayer returns log_softmax(logits) instead of the logits."""

from tests.negative_controls._base import install

BUG = "ProjectionLayer returns log_softmax(logits) instead of the logits"
COMPONENT = "projection"
CLAUSES = ("projection.logits",)

install(globals(), [
    ("model.py", "return self.proj(x)", "return torch.log_softmax(self.proj(x), dim=-1)"),
])
