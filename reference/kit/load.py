"""Open an implementation for the kit: import it, read its ``--impl-map`` and diagnose its API (the layer above
the contract, the registry, the adapter and the diagnosis; ``reference.spec.contract`` holds none of this so that
it stays at the bottom)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from reference.kit.adapter import ImplMap, MapError
from reference.kit.diagnose import reach
from reference.spec.contract import DEFAULT_IMPL

_OPENED: dict[tuple[str, str | None], tuple[ModuleType, Any]] = {}


def open_impl(name: str, impl_map: str | os.PathLike | None = None) -> tuple[ModuleType, Any]:
    """Import ``name``, read ``impl_map`` and diagnose the API: (the module the kit tests, its
    ``reference.kit.findings.Diagnosis``). The module is ``name`` itself, or it seen through ``impl_map`` (a TOML
    file, ``reference/kit/adapter.py``) and the diagnosis's proposed map. Cached per (name, map).

    Raises ``ImportError`` when the module cannot be imported or the map cannot be read, and ``MapError`` (a usage
    error, naming the map's line) when the map has a wrong type or an unknown key, or names something the module, a
    constructor or the probe model lacks (``ImplMap.check_module``/``check_attributes``); nothing else."""
    key = (name, os.fspath(impl_map) if impl_map else None)
    if key not in _OPENED:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001: any failure of the user's module at import is reported, exit 2
            raise ImportError(f"cannot import implementation {name!r}: {type(exc).__name__}: {exc}") from exc
        try:
            user = ImplMap.load(impl_map) if impl_map else ImplMap()
        except MapError:
            raise
        except (OSError, ValueError) as exc:
            raise ImportError(f"cannot read --impl-map {impl_map}: {exc}") from exc
        _OPENED[key] = reach(module, user, impl=name)
    return _OPENED[key]


def diagnosis_of(name: str, impl_map: str | os.PathLike | None = None) -> Any:
    """The API diagnosis ``open_impl``/``load_impl`` made of ``name``, or None."""
    opened = _OPENED.get((name, os.fspath(impl_map) if impl_map else None))
    return opened[1] if opened else None


def load_impl(name: str = DEFAULT_IMPL, impl_map: str | os.PathLike | None = None) -> ModuleType:
    """``open_impl``'s module, for a caller that needs every contract name: ``ImportError`` (or ``open_impl``'s
    ``MapError``) also when a contract name stays unreachable, naming it and, for a missing name, the closest match."""
    reached, diag = open_impl(name, impl_map)
    unreachable = [f for f in diag.unresolved() if f.clause in ("api.names", "build.structure")]
    if unreachable:
        raise ImportError(f"implementation {name!r}: " + "; ".join(f.message for f in unreachable)
                          + " (write an --impl-map: README, 'Test your own implementation')")
    return reached


