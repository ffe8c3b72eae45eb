"""build_transformer hands one attention block to the decoder block as both its self-attention and its
cross-attention: the two share their projections."""

from tests.negative_controls._base import install

BUG = "build_transformer passes one MultiHeadAttentionBlock as the decoder's self- and cross-attention"
COMPONENT = "decoder wiring"
CLAUSES = ("build.structure",)

install(globals(), [
    ("model.py", "        DecoderBlock(d_model, MultiHeadAttentionBlock(d_model, h, dropout, **kw),\n"
                 "                     MultiHeadAttentionBlock(d_model, h, dropout, **kw),\n",
     "        DecoderBlock(d_model, *[MultiHeadAttentionBlock(d_model, h, dropout, **kw)] * 2,\n"),
])
