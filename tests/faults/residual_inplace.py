"""Fault: ``ResidualConnection.forward`` adds in place, ``x += dropout(sublayer(norm(x)))``: it overwrites its caller's
input tensor. Its outputs are bit-identical to the correct model's."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", "return x + self.dropout(sublayer(self.norm(x)))",
     "x += self.dropout(sublayer(self.norm(x)))\n        return x"),
])
