"""Open an implementation for the kit: import it, read its ``--impl-map`` and diagnose its API (the layer above
the contract, the registry, the adapter and the diagnosis; ``reference.spec.contract`` holds none of this so that
it stays at the bottom)."""

from __future__ import annotations

import contextlib
import importlib
import os
from types import ModuleType
from typing import Any, Iterator

from torch import nn

from reference.kit import guard
from reference.kit.components import OPTIONAL_NAMES, REQUIRED_NAMES
from reference.kit.adapter import ImplMap, MapError
from reference.kit.findings import Finding
from reference.kit.diagnose import reach
from reference.spec import variants
from reference.spec.contract import DEFAULT_IMPL, kept_run_settings, use_per_head_masks

_OPENED: dict[tuple[str, str | None], tuple[ModuleType, Any]] = {}


def open_impl(name: str, impl_map: str | os.PathLike | None = None, *,
              call_timeout: float | None = guard.CALL_TIMEOUT) -> tuple[ModuleType, Any]:
    """Import ``name``, read ``impl_map`` and diagnose the API: (the module the kit tests, its
    ``reference.kit.findings.Diagnosis``). The module is ``name`` itself, or it seen through ``impl_map`` (a TOML
    file, ``reference/kit/adapter.py``) and the diagnosis's proposed map. Cached per (name, map).

    The import runs under the watchdog (``call_timeout``); a change it makes to torch's global state (the default
    dtype, grad mode, ...) is undone and kept as a module.pure finding. Raises ``ImportError`` when the module cannot
    be imported (an exception, ``sys.exit`` or a hang at import) or the map cannot be read, and ``MapError`` (a usage
    error, naming the map's line) when the map has a wrong type or an unknown key, or names something the module, a
    constructor or the probe model lacks (``ImplMap.check_module``/``check_attributes``); nothing else."""
    key = (name, os.fspath(impl_map) if impl_map else None)
    if key not in _OPENED:
        try:
            with guard.restored_state() as changed, guard.watchdog().limit(call_timeout, f"import {name}"), \
                    guard.backstop(call_timeout and call_timeout + guard.BACKSTOP_GRACE):
                module = importlib.import_module(name)
        except (Exception, SystemExit, guard.ModelHung) as exc:  # noqa: BLE001: any failure at import, exit 2
            what = (f"called sys.exit({exc.code!r}) at import" if isinstance(exc, SystemExit) else
                    str(exc) if isinstance(exc, guard.ModelHung) else f"{type(exc).__name__}: {exc}")
            raise ImportError(f"cannot import implementation {name!r}: {what} at {guard.where(exc)}") from exc
        try:
            user = ImplMap.load(impl_map) if impl_map else ImplMap()
        except MapError:
            raise
        except (OSError, ValueError) as exc:
            raise ImportError(f"cannot read --impl-map {impl_map}: {exc}") from exc
        with guard.restored_state() as in_calls, \
                guard.backstop(call_timeout and 4 * call_timeout + guard.BACKSTOP_GRACE):  # a C-level hang
            reached, diag = reach(module, user, impl=name, call_timeout=call_timeout)
        diag.findings += [Finding(guard.PURE, "import", "(import)", None,
                                  f"importing {name} changed {c} (the kit restored it: a module leaves torch's global "
                                  "state as it found it)", blocking=False) for c in changed]
        diag.findings += [Finding(guard.PURE, "build_transformer", "(calls)", None,
                                  f"building and running the probe model changed {c} (the kit restored it: a call "
                                  "leaves torch's global state as it found it)", blocking=False) for c in in_calls]
        _OPENED[key] = reached, diag
    return _OPENED[key]


def use_declared(impl: ModuleType, diag: Any, asked_variant: str | None) -> None:
    """Judge the run as the map declares: its ``variant`` line (``MapError`` when ``asked_variant``, the command
    line's ``--variant``, says otherwise) and its mask layout (``masks = "no-head-dim"``: masks shared by the heads
    only, ``reference.spec.contract.per_head_masks``)."""
    declared = diag.user.variant
    if declared and asked_variant and asked_variant != declared:
        raise MapError(f"{diag.user.source}: variant = {declared!r} contradicts --variant {asked_variant}")
    if declared or asked_variant:
        variants.use_variant(declared or asked_variant)
    use_per_head_masks(getattr(impl, "__kit_masks__", "head-dim") != "no-head-dim")


@contextlib.contextmanager
def declared(impl: ModuleType, diag: Any, asked_variant: str | None = None) -> Iterator[None]:
    """``use_declared`` for the block, the run's settings (variant, mask layout) restored after it: a report run
    in-process on another implementation leaves the caller's as they were."""
    with kept_run_settings():
        use_declared(impl, diag, asked_variant)
        yield


def diagnosis_of(name: str, impl_map: str | os.PathLike | None = None) -> Any:
    """The API diagnosis ``open_impl``/``load_impl`` made of ``name``, or None."""
    opened = _OPENED.get((name, os.fspath(impl_map) if impl_map else None))
    return opened[1] if opened else None


class ModelFault(ImportError):
    """The diagnosis stopped on the model's own fault (a constructor that raises: build.structure; a hang, an
    allocation far beyond its sizes: module.bounded): a FAIL, not a usage error."""


def load_impl(name: str = DEFAULT_IMPL, impl_map: str | os.PathLike | None = None, *,
              call_timeout: float | None = guard.CALL_TIMEOUT) -> ModuleType:
    """``open_impl``'s module, for a caller that needs every contract name: ``ImportError`` (never anything else)
    also when a contract name stays unreachable, naming it and, for a missing name, the closest match;
    :class:`ModelFault` when the model hung or over-allocated in the diagnosis."""
    reached, diag = open_impl(name, impl_map, call_timeout=call_timeout)
    faults = [f for f in diag.unresolved() if f.clause in (guard.BOUNDED, "build.structure")]
    if faults:  # the model could not be built or hung: a FAIL of its clause, not a usage error
        raise ModelFault(f"implementation {name!r}: " + "; ".join(f"{f.clause}: {f.message}" for f in faults))
    unreachable = [f for f in diag.unresolved() if f.clause == "api.names"]
    if unreachable:
        raise ImportError(f"implementation {name!r}: " + "; ".join(f.message for f in unreachable)
                          + " (write an --impl-map: README, 'Test your own implementation')")
    return reached


def contract_types(impl: ModuleType) -> tuple[type, ...]:
    """The implementation's contract classes (and, seen through a map, the user's own classes under them): the
    modules whose calls the call guard (``guard.CallGuard``) watches."""
    found: list[type] = []
    for contract in (*REQUIRED_NAMES, *OPTIONAL_NAMES):
        cls = getattr(impl, contract, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            found += [c for c in cls.__mro__[:2] if c is not nn.Module and issubclass(c, nn.Module)]
    return tuple(dict.fromkeys(found))
