"""``--impl-map FILE``: reach an implementation that spells the contract's names its own way, without editing it.

A map is a small TOML file, contract name = your name, with only the entries that differ::

    [classes]                        # contract class or function = yours
    InputEmbeddings = "InputEmbedding"
    [arguments.LayerNormalization]   # constructor argument: contract name = your parameter (false: you take none)
    features = "d_model"
    [attributes.ProjectionLayer]     # attribute, parameter, buffer, submodule or method: contract name = yours
    proj = "project"

``adapt(module, impl_map)`` returns a new module exposing the contract's names. Each mapped class is a subclass of
yours whose constructor takes the contract's arguments (by the contract's names and order) and calls yours by
keyword; after construction, every instance of your classes in the module tree is switched to that subclass, and
its parameters, buffers and submodules are renamed to the contract's names (so ``state_dict`` keys and
``named_parameters`` are the contract's), while your own code keeps reaching them by your names. Nothing in your
module is modified.

A map that cannot be used raises :class:`MapError` naming its line: a wrong type or an unknown key
(``ImplMap.load``), a class or argument your module lacks (``ImplMap.check_module``), an attribute the diagnosis's
probe model lacks (``ImplMap.check_attributes``).
"""

from __future__ import annotations

import difflib
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from torch import nn

from reference.spec import tomlfile
from reference.kit.components import ATTRIBUTES, OPTIONAL_NAMES, REQUIRED_NAMES, SIGNATURES, contract_class

_SECTIONS = ("classes", "arguments", "attributes")


class MapError(ValueError):
    """An ``--impl-map`` the kit cannot use: a wrong type, an unknown key, or a name that points nowhere in the module.
    The message starts with the map's path and the entry's line (``m.toml:3: ...``): a usage error, exit 4."""


@dataclass(frozen=True)
class ImplMap:
    """Contract name -> the implementation's name, per kind (see the module docstring for the TOML form)."""

    classes: dict[str, str] = field(default_factory=dict)
    arguments: dict[str, dict[str, str | bool]] = field(default_factory=dict)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    source: str = field(default="impl map", compare=False, repr=False)  # the map's path, for MapError
    text: str = field(default="", compare=False, repr=False)  # its TOML text, for the line of an entry
    masks: str = "head-dim"  # "no-head-dim": your modules take masks without the head dimension
    variant: str | None = None  # "post-norm": as --variant post-norm

    def __bool__(self) -> bool:
        return bool(self.classes or self.arguments or self.attributes)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "impl map", text: str = "") -> ImplMap:
        """Validate a parsed map: only known sections, contract classes, arguments and attributes, each value a name
        (``MapError`` naming the entry's line in ``text`` otherwise)."""
        where = _Where(source, text)
        for section, value in data.items():
            if section not in ("masks", "variant"):
                where.known((section,), value, _SECTIONS, "a section of a map")
        classes = where.table(("classes",), data.get("classes", {}), "a table of contract class or function = "
                              "your name")
        for contract, yours in classes.items():
            where.known(("classes", contract), yours, REQUIRED_NAMES + OPTIONAL_NAMES, "a contract class or function")
            where.typed(("classes", contract), yours, isinstance(yours, str),
                        "your class's or function's name (a string)")
        arguments = _section(where, data, "arguments", SIGNATURES, "arguments",
                             lambda yours: yours is False or isinstance(yours, (str, dict)),
                             "your parameter's name (a string) or false")
        attributes = _section(where, data, "attributes", ATTRIBUTES, "attributes",
                              lambda yours: isinstance(yours, str), "your attribute's name (a string)")
        return cls(dict(classes), arguments, attributes, source, text, data.get("masks", "head-dim"),
                   data.get("variant"))

    @classmethod
    def load(cls, path: str | Path) -> ImplMap:
        text = Path(path).read_text(encoding="utf-8")
        return cls.from_dict(tomlfile.loads(text), source=str(path), text=text)

    def merged(self, other: ImplMap) -> ImplMap:
        """This map with ``other``'s entries added where this one has none."""
        def merge(a: dict, b: dict) -> dict:
            out = {k: dict(v) for k, v in a.items()}
            for k, v in b.items():
                out[k] = {**v, **out.get(k, {})}
            return out
        return ImplMap({**other.classes, **self.classes}, merge(self.arguments, other.arguments),
                       merge(self.attributes, other.attributes))

    def to_toml(self) -> str:
        """The map as the TOML a user saves and edits."""
        lines = []
        if self.classes:
            lines += ["[classes]"] + [f"{k} = {_toml(v)}" for k, v in sorted(self.classes.items())] + [""]
        for section in ("arguments", "attributes"):
            for where, entries in sorted(getattr(self, section).items()):
                if entries:
                    lines += [f"[{section}.{where}]"] + [f"{k} = {_toml(v)}" for k, v in entries.items()] + [""]
                elif section == "arguments":  # an empty table accepts arguments that only come in another order
                    lines += [f"[{section}.{where}]  # your order of the contract's arguments", ""]
        return "\n".join(lines)

    def check_module(self, module: ModuleType, classes: dict[str, str] | None = None) -> None:
        """``MapError`` unless every class maps to a class or function of ``module`` and every argument to a
        parameter of its class's constructor (``classes``: the contract-to-yours names to look arguments up by,
        default this map's own; a class found under neither name is the diagnosis's ``api.names`` finding)."""
        where = _Where(self.source, self.text)
        public = sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v))
        for contract, yours in self.classes.items():
            if not callable(getattr(module, yours, None)):
                where.fail(("classes", contract), f"the module {module.__name__} has no class or function {yours!r}",
                           yours, public, yours)
        classes = {**self.classes, **(classes or {})}
        for contract, entries in self.arguments.items():
            target = getattr(module, classes.get(contract, contract), None)
            taken = _parameters(target)
            if taken is None:
                continue
            for name, yours in entries.items():
                if yours is not False and yours not in taken:
                    where.fail(("arguments", contract, name), f"{_called(target)}({', '.join(taken)}) takes no "
                               f"parameter {yours!r}", yours, taken, yours)

    def check_attributes(self, model: nn.Module, *, forwarded: bool = True) -> None:
        """``MapError`` unless every attribute is found on the probe ``model``'s instances of its class (a
        parameter, buffer, submodule, method or plain attribute). A class with no instance there, and a tensor a
        forward leaves when the forward failed (``forwarded``), cannot be checked and are left alone."""
        where = _Where(self.source, self.text)
        for contract, entries in self.attributes.items():
            owners = [m for m in model.modules() if contract_class(m) == contract]
            if not owners:
                continue
            for name, yours in entries.items():
                if any(_has(m, yours) for m in owners) or (not forwarded and ATTRIBUTES[contract][name] == "weights"):
                    continue
                known = sorted({n for m in owners for n in _member_names(m) if _has(m, n)})
                yours_is = type(owners[0]).__name__
                owner = f"`{contract}`" + (f" (your `{yours_is}`)" if yours_is != contract else "")
                where.fail(("attributes", contract, name), f"the probe model's {owner} has no attribute, parameter, "
                           f"buffer, submodule or method {yours!r}", yours, known, yours)


def _toml(value: Any) -> str:
    """``value`` as TOML writes it (a string quoted, ``false``, a table as ``{...}``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _parameters(target: Any) -> list[str] | None:
    """The parameter names ``target`` (a class: its constructor) takes by keyword; None when any name is taken
    (``**kwargs``) or there is nothing to inspect."""
    if not callable(target):
        return None
    try:
        params = inspect.signature(target.__init__ if isinstance(target, type) else target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]


def _called(target: Any) -> str:
    return getattr(target, "__name__", repr(target))


def _has(owner: nn.Module, name: str) -> bool:
    """Whether ``owner.name`` resolves (through the adapter's renames too); a property that raises counts."""
    try:
        getattr(owner, name)
    except AttributeError:
        return False
    except Exception:  # noqa: BLE001: it exists; what it raises is the tests' business
        return True
    return True


def _member_names(owner: nn.Module) -> set[str]:
    """Your names for what ``owner`` holds: its slots and plain attributes (a renamed slot by your name) and its
    class's public attributes beyond ``nn.Module``'s."""
    renames = getattr(type(owner), "_contract_renames", {})
    slots = [*owner._parameters, *owner._buffers, *owner._modules, *vars(owner)]
    names = {renames.get(n, n) for n in slots if not n.startswith("_") and n != "training"}
    return names | {n for n in dir(type(owner)) if not n.startswith("_") and not hasattr(nn.Module, n)}


_NO_VALUE = object()


@dataclass(frozen=True)
class _Where:
    """A map's path and text: the line of an entry, and the ``MapError`` that names it."""

    source: str
    text: str

    def line(self, path: tuple[str, ...]) -> int | None:
        """The line of ``path`` (table names, then the key): the key's line in its table, else the nearest
        enclosing table's header or key."""
        for n in range(len(path), 0, -1):
            found = _find_line(self.text, path[:n])
            if found:
                return found
        return None

    def fail(self, path: tuple[str, ...], problem: str, name: str = "", known: Any = (), value: Any = _NO_VALUE
             ) -> None:
        """Raise ``MapError``: ``path:line: [table] key = value: problem (closest: ...)``."""
        close = difflib.get_close_matches(name, [str(k) for k in known], n=3) if name else []
        hint = f" (closest: {', '.join(repr(c) for c in close)})" if close else ""
        line = self.line(path)
        if value is _NO_VALUE or isinstance(value, dict):
            entry = f"[{'.'.join(path)}]"
        else:
            entry = (f"[{'.'.join(path[:-1])}] " if len(path) > 1 else "") + f"{path[-1]} = {_toml(value)}"
        raise MapError(f"{self.source}{f':{line}' if line else ''}: {entry}: {problem}{hint}")

    def known(self, path: tuple[str, ...], value: Any, names: Any, what: str) -> None:
        """``path[-1]`` must be one of ``names``."""
        if path[-1] not in names:
            self.fail(path, f"{path[-1]!r} is not {what}; expected one of {list(names)}", path[-1], names, value)

    def typed(self, path: tuple[str, ...], value: Any, ok: bool, expected: str) -> None:
        if not ok:
            self.fail(path, f"expected {expected}, got {type(value).__name__} {_toml(value)}", value=value)

    def table(self, path: tuple[str, ...], value: Any, expected: str) -> dict:
        """``value`` (at ``path``) when it is a table."""
        self.typed(path, value, isinstance(value, dict), expected)
        return value


def _keys(text: str) -> list[str]:
    """A TOML header's or key's dotted parts, unquoted."""
    return [k.strip().strip("\"'") for k in text.split(".")]


def _find_line(text: str, path: tuple[str, ...]) -> int | None:
    """The first line whose table header or key (in its table, dotted keys too) starts with ``path``."""
    table: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        header = re.match(r"^\[\[?([^\]]+)\]\]?", line)
        if header:
            table = _keys(header.group(1))
            if tuple(table)[:len(path)] == path:
                return number
            continue
        key = re.match(r"^([\w\-.\"' ]+?)\s*=", line)
        if key and tuple(table + _keys(key.group(1)))[:len(path)] == path:
            return number
    return None


def _section(where: _Where, data: dict, section: str, table: dict, what: str, valid: Callable[[Any], bool],
             expected: str) -> dict[str, dict[str, Any]]:
    """``[section.Where]`` tables of a map, each key checked against ``table[Where]`` (the contract's names)."""
    tables = where.table((section,), data.get(section, {}), "a table of [" + section + ".<contract class>] tables")
    entries = {}
    for owner, names in tables.items():
        where.known((section, owner), names, table, f"a contract class with {what}")
        names = where.table((section, owner), names, f"a table of contract name = {expected}")
        for contract, yours in names.items():
            where.known((section, owner, contract), yours, table[owner], f"one of `{owner}`'s contract {what}")
            where.typed((section, owner, contract), yours, valid(yours), expected)
        entries[owner] = dict(names)
    return entries


def _rename_slots(module: nn.Module, renames: dict[str, str]) -> None:
    """Rename parameters, buffers and submodules ``yours -> contract`` in place, keeping their order."""
    for registry in ("_parameters", "_buffers", "_modules"):
        slots: dict = getattr(module, registry)
        if any(y in slots for y in renames.values()):
            reverse = {y: c for c, y in renames.items()}
            items = [(reverse.get(k, k), v) for k, v in slots.items()]
            slots.clear()
            slots.update(items)
    if "_non_persistent_buffers_set" in vars(module):
        reverse = {y: c for c, y in renames.items()}
        module._non_persistent_buffers_set = {reverse.get(n, n) for n in module._non_persistent_buffers_set}


def _adapted_class(contract: str, yours: type, attributes: dict[str, str]) -> type:
    """A subclass of ``yours`` that answers to the contract's attribute names and your own."""
    to_contract = {y: c for c, y in attributes.items()}

    def __getattr__(self, name: str) -> Any:  # only reached when normal lookup fails
        if name in to_contract:  # your name for a slot that now has the contract's name
            try:
                return nn.Module.__getattr__(self, to_contract[name])
            except AttributeError:
                pass
        if name in attributes and attributes[name] in vars(self):  # a plain attribute kept under your name
            return vars(self)[attributes[name]]
        if name in attributes and hasattr(type(self), attributes[name]):  # a method under your name
            return getattr(self, attributes[name])
        return nn.Module.__getattr__(self, name)

    namespace: dict[str, Any] = {"__getattr__": __getattr__, "__module__": yours.__module__,
                                 "__qualname__": yours.__qualname__, "_contract_name": contract,
                                 "_contract_renames": dict(attributes)}
    static = attributes.get("attention") if contract == "MultiHeadAttentionBlock" else None
    if static and isinstance(inspect.getattr_static(yours, static, None), staticmethod):
        namespace["attention"] = inspect.getattr_static(yours, static)
    return type(yours.__name__, (yours,), namespace)


def _contract_signature(contract: str, target: Callable, arguments: dict[str, str | bool]) -> inspect.Signature:
    """The contract's parameters in the contract's order, with your defaults; your keyword-only extras after."""
    theirs = inspect.signature(target).parameters
    params = []
    for name in SIGNATURES[contract]:
        yours = arguments.get(name, name)
        default = theirs[yours].default if yours and yours in theirs else inspect.Parameter.empty
        if yours is False:
            default = None
        if params and params[-1].default is not inspect.Parameter.empty and default is inspect.Parameter.empty:
            default = None  # a required argument after a defaulted one: the kit always passes it
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
    for name, p in theirs.items():
        if p.kind is inspect.Parameter.KEYWORD_ONLY or (p.kind is inspect.Parameter.VAR_KEYWORD):
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=None)
                          if p.kind is inspect.Parameter.KEYWORD_ONLY else p)
    return inspect.Signature(params)


def _call_yours(contract: str, target: Callable, signature: inspect.Signature, arguments: dict[str, str | bool],
                args: tuple, kwargs: dict) -> Any:
    bound = signature.bind(*args, **kwargs)
    call: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if name in SIGNATURES[contract]:
            yours = arguments.get(name, name)
            if yours is not False:
                call[yours] = value
        elif isinstance(value, dict) and signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            call.update(value)
        else:
            call[name] = value
    return target(**call)


@dataclass
class _Adapter:
    module: ModuleType
    impl_map: ImplMap
    by_type: dict[type, type] = field(default_factory=dict)  # your class -> its adapted subclass

    def adapt_tree(self, root: Any) -> Any:
        """Switch every instance of your mapped classes under ``root`` to its adapted subclass; rename slots."""
        if not isinstance(root, nn.Module):
            return root
        for m in root.modules():
            adapted = self.by_type.get(type(m))
            if adapted is not None:
                m.__class__ = adapted
            renames = getattr(type(m), "_contract_renames", None)
            if renames:
                _rename_slots(m, renames)
        return root

    def build(self) -> ModuleType:
        out = ModuleType(f"{self.module.__name__}+impl_map", f"{self.module.__name__} seen through an --impl-map")
        out.__file__ = getattr(self.module, "__file__", None)
        for contract in REQUIRED_NAMES + OPTIONAL_NAMES:
            yours = getattr(self.module, self.impl_map.classes.get(contract, contract), None)
            if yours is None:
                continue
            if isinstance(yours, type) and issubclass(yours, nn.Module):
                cls = _adapted_class(contract, yours, self.impl_map.attributes.get(contract, {}))
                self.by_type[yours] = cls
                setattr(out, contract, cls)
            else:
                setattr(out, contract, yours)
        for contract in REQUIRED_NAMES:
            target = getattr(out, contract, None)
            if isinstance(target, type):
                target.__init__ = self._init(contract, target.__mro__[1], self.impl_map.arguments.get(contract, {}))
            elif callable(target) and contract in SIGNATURES:
                setattr(out, contract, self._function(contract, target, self.impl_map.arguments.get(contract, {})))
        return out

    def _init(self, contract: str, yours: type, arguments: dict[str, str | bool]) -> Callable:
        signature = _contract_signature(contract, yours.__init__, arguments)
        adapter = self

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            _call_yours(contract, lambda **kw: yours.__init__(self, **kw), signature, arguments, args, kwargs)
            adapter.adapt_tree(self)

        __init__.__signature__ = signature.replace(parameters=[
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *signature.parameters.values()])
        return __init__

    def _function(self, contract: str, yours: Callable, arguments: dict[str, str | bool]) -> Callable:
        signature = _contract_signature(contract, yours, arguments)
        adapter = self

        def function(*args: Any, **kwargs: Any) -> Any:
            return adapter.adapt_tree(_call_yours(contract, yours, signature, arguments, args, kwargs))

        function.__signature__ = signature
        function.__name__ = function.__qualname__ = contract
        function.__doc__ = getattr(yours, "__doc__", None)
        return function


def adapt(module: ModuleType, impl_map: ImplMap, *, register: bool = True) -> ModuleType:
    """``module`` seen through ``impl_map``: a new module exposing the contract's names (see the module docstring).

    Registered in ``sys.modules`` under its own name so pickling and ``importlib`` find it (unless ``register`` is
    false: a throwaway view)."""
    adapted = _Adapter(module, impl_map).build()
    if register:
        sys.modules[adapted.__name__] = adapted
    return adapted
