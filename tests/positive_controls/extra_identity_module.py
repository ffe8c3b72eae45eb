"""An extra module the contract does not name: the encoder block passes its output through ``nn.Identity()`` (a
hook point left in real code)."""

from tests.negative_controls._base import install

VARIANT = "EncoderBlock holds an extra nn.Identity() submodule (extra_identity) and passes its output through it"
COMPONENT = "encoder wiring"

install(globals(), [
    ("model.py", "[ResidualConnection(features, dropout, device=device, dtype=dtype) for _ in range(2)])",
     "[ResidualConnection(features, dropout, device=device, dtype=dtype) for _ in range(2)])\n"
     "        self.extra_identity = nn.Identity()"),
    ("model.py", "return self.residual_connections[1](x, self.feed_forward_block)",
     "return self.extra_identity(self.residual_connections[1](x, self.feed_forward_block))"),
])
