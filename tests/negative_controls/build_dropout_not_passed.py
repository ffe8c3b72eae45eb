"""Build_transformer builds the attention blocks with a hard-coded 0.1 instead of its dropout argument."""

from tests.negative_controls._base import install

BUG = "build_transformer builds the attention blocks with a hard-coded dropout of 0.1 instead of its dropout argument"
COMPONENT = "dropout"
CLAUSES = ("build.structure",)

install(globals(), [
    ("model.py", "MultiHeadAttentionBlock(d_model, h, dropout, **kw)", "MultiHeadAttentionBlock(d_model, h, 0.1, **kw)",
     3),
])
