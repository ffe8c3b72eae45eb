"""Fault: ``build_transformer`` never returns (it sleeps in a loop before building anything)."""

import time  # noqa: F401 - the patched source's loop finds it in this namespace

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", 'check_positive_int("N", N)', 'while True:\n        time.sleep(0.01)\n    check_positive_int("N", N)'),
])
