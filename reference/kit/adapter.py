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
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from torch import nn

from reference.spec import tomlfile
from reference.kit.components import ATTRIBUTES, OPTIONAL_NAMES, REQUIRED_NAMES, SIGNATURES

_SECTIONS = ("classes", "arguments", "attributes")


@dataclass(frozen=True)
class ImplMap:
    """Contract name -> the implementation's name, per kind (see the module docstring for the TOML form)."""

    classes: dict[str, str] = field(default_factory=dict)
    arguments: dict[str, dict[str, str | bool]] = field(default_factory=dict)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.classes or self.arguments or self.attributes)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "impl map") -> ImplMap:
        """Validate a parsed map: only known sections, contract classes, arguments and attributes."""
        unknown = set(data) - set(_SECTIONS)
        if unknown:
            raise ValueError(f"{source}: unknown section(s) {sorted(unknown)}; expected {list(_SECTIONS)}")
        names = set(REQUIRED_NAMES) | set(OPTIONAL_NAMES)
        classes = dict(data.get("classes", {}))
        for contract, yours in classes.items():
            _check(contract in names, f"{source}: [classes] {contract!r} is not a contract name", contract, names)
            _check(isinstance(yours, str), f"{source}: [classes] {contract} must name a class or function", "", ())
        arguments = _section(source, data, "arguments", SIGNATURES, "arguments",
                             lambda yours: yours is False or isinstance(yours, str), "your parameter's name or false")
        attributes = _section(source, data, "attributes", ATTRIBUTES, "attributes",
                              lambda yours: isinstance(yours, str), "a name")
        return cls(classes, arguments, attributes)

    @classmethod
    def load(cls, path: str | Path) -> ImplMap:
        return cls.from_dict(tomlfile.load(path), source=str(path))

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
        def value(v: str | bool) -> str:
            return "false" if v is False else f'"{v}"'
        lines = []
        if self.classes:
            lines += ["[classes]"] + [f"{k} = {value(v)}" for k, v in sorted(self.classes.items())] + [""]
        for section in ("arguments", "attributes"):
            for where, entries in sorted(getattr(self, section).items()):
                if entries:
                    lines += [f"[{section}.{where}]"] + [f"{k} = {value(v)}" for k, v in entries.items()] + [""]
        return "\n".join(lines)


def _check(ok: bool, message: str, name: str, known) -> None:
    if not ok:
        import difflib
        close = difflib.get_close_matches(name, list(known), n=1) if name else []
        raise ValueError(message + (f" (did you mean {close[0]!r}?)" if close else ""))


# ------------------------------------------------------------------------------------------------ the adapter
def _section(source: str, data: dict, section: str, table: dict, what: str, valid: Callable[[Any], bool],
             expected: str) -> dict[str, dict[str, Any]]:
    """``[section.Where]`` tables of a map, each key checked against ``table[Where]`` (the contract's names)."""
    entries = {k: dict(v) for k, v in data.get(section, {}).items()}
    for where, names in entries.items():
        _check(where in table, f"{source}: [{section}.{where}] is not a contract class", where, table)
        for contract, yours in names.items():
            _check(contract in table[where], f"{source}: [{section}.{where}] {contract!r} is not one of its contract "
                   f"{what} {list(table[where])}", contract, table[where])
            _check(valid(yours), f"{source}: [{section}.{where}] {contract} must be {expected}", "", ())
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


def adapt(module: ModuleType, impl_map: ImplMap) -> ModuleType:
    """``module`` seen through ``impl_map``: a new module exposing the contract's names (see the module docstring).

    Registered in ``sys.modules`` under its own name so pickling and ``importlib`` find it."""
    adapted = _Adapter(module, impl_map).build()
    sys.modules[adapted.__name__] = adapted
    return adapted
