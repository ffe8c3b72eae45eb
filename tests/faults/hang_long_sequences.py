"""Fault: ``MultiHeadAttentionBlock.forward`` never returns on queries longer than 6 positions. The API diagnosis's
probe (5 and 4 positions) passes; the hang comes in the middle of a test, where only the per-call watchdog sees it."""

import time  # noqa: F401 - the patched source's loop finds it in this namespace

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", 'for name, t in (("q", q), ("k", k), ("v", v)):',
     'while q.shape[-2] > 6:\n            time.sleep(0.01)\n        for name, t in (("q", q), ("k", k), ("v", v)):'),
])
