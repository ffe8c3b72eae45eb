"""The one correct base every negative control is built from, and the one-change helper.

``install(globals(), patches)`` runs the source of the known-correct implementation (``scratch_transformer``'s
``model.py`` and ``masks.py``) inside the control module's own namespace, after applying each textual patch
``(file, old, new[, count])`` to it. So every class and ``build_transformer`` of a control look their collaborators
up in the control's namespace: a control that patches one line changes that one thing and nothing else, and is a
complete implementation importable by dotted name (``pytest --impl tests.negative_controls.<name>``).

This is the only place under ``tests/`` that reads ``scratch_transformer``, and it reads it as *source*, the
known-correct base of the controls; it is never the implementation under test (tests reach that only through the
``impl`` fixture). A patch whose ``old`` is not found exactly ``count`` times raises ``ImportError`` naming the
control and the text: when the base is refactored, the control must be updated, never silently become correct.
``old`` may be a :class:`Line`: it then matches whole lines by how their code starts (``Line("var = ")``), and
``new`` replaces each such line, keeping its indentation, so the control survives a rewrite of the rest of the line.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterable

BASE_PACKAGE = "scratch_transformer"
#: Source files of the base, executed in this order into the control's namespace.
BASE_FILES = ("model.py", "masks.py")

Patch = tuple  # (file, old, new) or (file, old, new, count); old: str or Line


class Line(str):
    """A patch anchor matching every line whose code (indentation stripped) starts with this text."""

    def __repr__(self) -> str:
        return f"Line({str.__repr__(self)})"


def _replace_lines(source: str, prefix: Line, new: str) -> tuple[str, int]:
    lines = source.splitlines(keepends=True)
    found = 0
    for i, text in enumerate(lines):
        code = text.lstrip()
        if code.startswith(prefix):
            indent = text[: len(text) - len(code)]
            lines[i] = "".join(indent + part + "\n" for part in new.splitlines())
            found += 1
    return "".join(lines), found


def base_dir() -> Path:
    """Directory of the correct base package (found without importing it)."""
    spec = importlib.util.find_spec(BASE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"cannot find the base package {BASE_PACKAGE!r}")
    return Path(next(iter(spec.submodule_search_locations)))


def patched_source(file: str, patches: Iterable[Patch], *, control: str) -> str:
    """The base file's source with this control's patches for ``file`` applied (each must match ``count`` times)."""
    source = (base_dir() / file).read_text()
    for patch in patches:
        target, old, new, count = (*patch, 1) if len(patch) == 3 else patch
        if target != file:
            continue
        if isinstance(old, Line):
            source, found = _replace_lines(source, old, new)
        else:
            found = source.count(old)
            source = source.replace(old, new)
        if found != count:
            raise ImportError(f"negative control {control}: expected {count} occurrence(s) of {old!r} in "
                              f"{BASE_PACKAGE}/{file}, found {found}; update the control to the refactored base")
    return source


def install(namespace: dict[str, Any], patches: Iterable[Patch] = ()) -> None:
    """Define the whole contract in ``namespace`` (a control module's ``globals()``) from the patched base.

    Relative imports of the base (``from ._checks import ...``) resolve against the base package while the source
    runs; the control keeps its own ``__name__``, ``__package__`` and docstring, and records its ``PATCHES``.
    """
    patches = list(patches)
    files = {p[0] for p in patches}
    unknown = files - set(BASE_FILES)
    control = namespace.get("__name__", "?")
    if unknown:
        raise ImportError(f"negative control {control}: patches name unknown base files {sorted(unknown)}")
    saved = {key: namespace.get(key) for key in ("__package__", "__doc__")}
    namespace["__package__"] = BASE_PACKAGE
    try:
        for file in BASE_FILES:
            path = base_dir() / file
            code = compile(patched_source(file, patches, control=control), f"{path} [{control}]", "exec",
                           dont_inherit=True)
            exec(code, namespace)  # noqa: S102 - the project's own source, one patch applied
    finally:
        namespace.update(saved)
    namespace["PATCHES"] = tuple(patches)
