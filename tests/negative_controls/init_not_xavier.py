"""Build_transformer skips the Xavier loop: nn.Linear/nn.Embedding default init."""

from tests.negative_controls._base import install

BUG = "build_transformer skips the Xavier loop: nn.Linear/nn.Embedding default init"
COMPONENT = "initialisation"
CLAUSES = ("build.xavier",)

install(globals(), [
    ("model.py", "nn.init.xavier_uniform_(p)", "pass  # Xavier loop forgotten"),
])
