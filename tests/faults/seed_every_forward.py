"""Fault: ``torch.manual_seed(0)`` at the start of every ``Transformer`` and ``MultiHeadAttentionBlock`` forward: the
global generator is reset on each call, so dropout draws the same masks every time (and the caller's random stream
is clobbered)."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", 'for name, t in (("q", q), ("k", k), ("v", v)):',
     'torch.manual_seed(0)\n        for name, t in (("q", q), ("k", k), ("v", v)):'),
    ("model.py", "return self.project(self.decode(self.encode(src, src_mask), src_mask, tgt, tgt_mask))",
     "torch.manual_seed(0)\n"
     "        return self.project(self.decode(self.encode(src, src_mask), src_mask, tgt, tgt_mask))"),
])
