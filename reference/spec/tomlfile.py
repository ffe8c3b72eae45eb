"""Read a TOML file: ``tomllib`` on Python 3.11+, the ``tomli`` backport on 3.10 (a dependency there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # Python 3.10 (pyproject.toml)
    import tomli as tomllib


def load(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def loads(text: str) -> dict[str, Any]:
    return tomllib.loads(text)
