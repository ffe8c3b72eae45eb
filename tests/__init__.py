"""The property suite. ``conftest.py`` (at the root) shares what it learns at collection through these keys."""

from __future__ import annotations

import pytest

#: ``config.stash`` key, set by the root conftest when it collects: every test function's clause ids
#: (``module::name`` -> ids, ``@strict`` for the strict marker), before ``-m``/``-k`` deselect anything.
COLLECTED_CLAUSES = pytest.StashKey[dict]()
#: ``config.stash`` key: the node ids of every collected test (before deselection).
COLLECTED_NODEIDS = pytest.StashKey[frozenset]()
