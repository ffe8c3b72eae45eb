"""build_transformer ties the target embedding to the source embedding when the vocabularies are the same size (the
paper's weight sharing, which the blog's contract does not do): one nn.Embedding weight under two contract paths."""

from tests.negative_controls._base import install

BUG = "build_transformer reuses the source embedding as the target embedding when the vocabulary sizes are equal"
COMPONENT = "embeddings"
CLAUSES = ("build.structure",)

install(globals(), [
    ("model.py", "    tgt_embed = InputEmbeddings(d_model, tgt_vocab_size, **kw)\n",
     "    tgt_embed = src_embed if tgt_vocab_size == src_vocab_size else InputEmbeddings(d_model, tgt_vocab_size, **kw)\n"),
])
