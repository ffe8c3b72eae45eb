"""Positive controls: implementations that are *correct under the README contract* but differ from
``scratch_transformer`` the way real code does. The mirror image of ``tests/negative_controls``.

Every module here other than the tools (names starting with ``_``) is a control: it defines ``VARIANT`` (one line:
how it differs), ``COMPONENT`` (where), optionally ``DECLARED_VARIANT`` (a variant of ``reference.spec.variants``,
e.g. "post-norm": every run of it passes ``--variant``, see ``variant_args``), and the whole contract, built by ``tests.negative_controls._base.install``
from the one correct base with one change, or written independently (``independent``). The suite must pass every
one of them (specificity): a test that fails on a positive control asserts more than the contract, or a tolerance
that no backward-stable algorithm meets. ``python -m tests.negative_controls.kill_matrix`` runs them with the
negative controls and records both verdicts; ``tests/test_positive_controls.py`` re-checks them in CI.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

PACKAGE = __name__
HERE = Path(__file__).resolve().parent


def control_names() -> list[str]:
    """Short names of every positive control, sorted (found by listing the package, without importing it)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith("_"))


def dotted(name: str) -> str:
    """The ``--impl`` name of a positive control."""
    return f"{PACKAGE}.{name}"


def load_control(name: str) -> ModuleType:
    return importlib.import_module(dotted(name))


def variant_args(name: str) -> list[str]:
    """The pytest arguments declaring a control's variant: ``["--variant", DECLARED_VARIANT]``, or none (the default
    variant, pre-norm)."""
    declared = getattr(load_control(name), "DECLARED_VARIANT", None)
    return ["--variant", declared] if declared else []
