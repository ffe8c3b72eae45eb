"""Negative controls: complete implementations of the contract, each with exactly one realistic bug.

Every module here other than the tools (names starting with ``_`` and ``kill_matrix``) is a control: it defines
``BUG`` (one line: what is wrong), ``COMPONENT`` (where), and the whole contract, built by
``_base.install`` from the one correct base with a single change. Run the suite against one with
``pytest --impl tests.negative_controls.<name>``; ``python -m tests.negative_controls.kill_matrix`` runs them all and
writes ``docs/kill-matrix.md`` and ``expected_kills.json`` (what ``tests/test_negative_controls.py`` checks in CI).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

PACKAGE = __name__
HERE = Path(__file__).resolve().parent
#: Modules of this package that are tools, not controls.
TOOLS = frozenset({"kill_matrix", "report_roots"})
#: Written by the kill-matrix command: per control, the tests that caught it.
EXPECTED_KILLS = HERE / "expected_kills.json"


def control_names() -> list[str]:
    """Short names of every control, sorted (found by listing the package, without importing anything)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)])
                  if not m.name.startswith("_") and m.name not in TOOLS)


def dotted(name: str) -> str:
    """The ``--impl`` name of a control."""
    return f"{PACKAGE}.{name}"


def load_control(name: str) -> ModuleType:
    """Import a control by its short name."""
    return importlib.import_module(dotted(name))
