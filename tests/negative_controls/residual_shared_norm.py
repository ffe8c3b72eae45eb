"""The decoder block's third residual reuses the second one's LayerNorm (one norm for the cross-attention and the
feed-forward sublayers): both sublayers are normalised with the same gain and shift."""

from tests.negative_controls._base import install

BUG = "DecoderBlock's feed-forward residual reuses the cross-attention residual's LayerNorm"
COMPONENT = "decoder wiring"
CLAUSES = ("build.structure", "decoder.block")

install(globals(), [
    ("model.py", "            [ResidualConnection(features, dropout, device=device, dtype=dtype) for _ in range(3)])\n",
     "            [ResidualConnection(features, dropout, device=device, dtype=dtype) for _ in range(3)])\n"
     "        self.residual_connections[2].norm = self.residual_connections[1].norm\n"),
])
