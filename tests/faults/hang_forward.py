"""Fault: ``MultiHeadAttentionBlock.forward`` never returns (it sleeps in a loop; every model forward hangs)."""

import time  # noqa: F401 - the patched source's loop finds it in this namespace

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", 'for name, t in (("q", q), ("k", k), ("v", v)):',
     'while True:\n            time.sleep(0.01)\n        for name, t in (("q", q), ("k", k), ("v", v)):'),
])
