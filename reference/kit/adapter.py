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

import torch
from torch import nn

from reference.spec import tomlfile, variants
from reference.kit.components import ATTRIBUTES, OPTIONAL_NAMES, REQUIRED_NAMES, SIGNATURES, contract_class

_SECTIONS = ("classes", "arguments", "attributes")
#: Top-level keys of a map (before any table): the residual variant and the mask layout your modules take.
_KEYS = ("variant", "masks")
HEAD_DIM, NO_HEAD_DIM = "head-dim", "no-head-dim"
MASK_LAYOUTS = (HEAD_DIM, NO_HEAD_DIM)
#: ``a.b.0``: a dotted path below an instance (a ModuleList/Sequential index is a part).
_PATH = re.compile(r"^[A-Za-z_]\w*(\.(\w+))*$")
#: ``qkv[d:2d]``: rows of a fused ``nn.Linear(d, k*d)`` (``d``: its ``in_features``).
_SLICE = re.compile(r"^(?P<path>[A-Za-z_][\w.]*)\[(?P<start>0|\d*d):(?P<stop>\d*d)\]$")
#: ``src_embed.0``: your constructor parameter ``src_embed`` takes an ``nn.Sequential``, this argument its item 0.
_ITEM = re.compile(r"^(?P<name>[A-Za-z_]\w*)\.(?P<index>\d+)$")
#: ``{clone = "layer", count = "N"}``: one layer and a count, which your constructor deep-copies.
_CLONE_KEYS = ("clone", "count")


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
    masks: str = HEAD_DIM  # the mask layout your modules take (``MASK_LAYOUTS``)
    variant: str | None = None  # the residual variant the map declares (None: the run's, ``--variant``)

    def __bool__(self) -> bool:
        return bool(self.classes or self.arguments or self.attributes or self.masks != HEAD_DIM)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "impl map", text: str = "") -> ImplMap:
        """Validate a parsed map: only known sections, contract classes, arguments and attributes, each value a name
        (``MapError`` naming the entry's line in ``text`` otherwise)."""
        where = _Where(source, text)
        for section, value in data.items():
            where.known((section,), value, _SECTIONS + _KEYS, "a section or top-level key of a map")
        masks = data.get("masks", HEAD_DIM)
        where.typed(("masks",), masks, masks in MASK_LAYOUTS, f"one of {list(MASK_LAYOUTS)}")
        variant = data.get("variant")
        where.typed(("variant",), variant, variant is None or variant in variants.VARIANTS,
                    f"one of {list(variants.VARIANTS)}")
        classes = where.table(("classes",), data.get("classes", {}), "a table of contract class or function = "
                              "your name")
        for contract, yours in classes.items():
            where.known(("classes", contract), yours, REQUIRED_NAMES + OPTIONAL_NAMES, "a contract class or function")
            where.typed(("classes", contract), yours, isinstance(yours, str),
                        "your class's or function's name (a string)")
        arguments = _section(where, data, "arguments", SIGNATURES, "arguments", _valid_argument,
                             "your parameter's name, \"name.i\" (item i of the nn.Sequential your parameter takes), "
                             "{clone = \"layer\", count = \"N\"} (for layers) or false")
        attributes = _section(where, data, "attributes", ATTRIBUTES, "attributes", _valid_attribute,
                              "your attribute's name, a dotted path (\"linears.0\") or rows of a fused Linear "
                              "(\"qkv[0:d]\")")
        for owner, entries in attributes.items():
            _check_slices(where, owner, entries)
        for owner, entries in arguments.items():
            _check_structural_arguments(where, owner, entries)
        return cls(dict(classes), arguments, attributes, source, text, masks, variant)

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
                       merge(self.attributes, other.attributes), self.source, self.text,
                       self.masks if self.masks != HEAD_DIM else other.masks, self.variant or other.variant)

    def to_toml(self) -> str:
        """The map as the TOML a user saves and edits."""
        lines = [f"{k} = {_toml(v)}" for k, v in (("variant", self.variant), ("masks", self.masks))
                 if v is not None and v != HEAD_DIM]
        lines += [""] if lines else []
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
                for param in _argument_names(yours):
                    if param not in taken:
                        where.fail(("arguments", contract, name), f"{_called(target)}({', '.join(taken)}) takes no "
                                   f"parameter {param!r}", param, taken, yours)

    def fail(self, path: tuple[str, ...], problem: str) -> None:
        """Raise ``MapError`` for the entry at ``path`` (``("masks",)``, ``("attributes", "Encoder", "norm")``),
        naming its line: a check the diagnosis makes on the probe model."""
        value: Any = self
        for part in path:
            value = getattr(value, part, None) if value is self else (value or {}).get(part)
        _Where(self.source, self.text).fail(path, problem, value=value)

    def check_attributes(self, model: nn.Module, *, forwarded: bool = True, module: ModuleType | None = None
                         ) -> None:
        """``MapError`` unless every attribute is found on the probe ``model``'s instances of its class (a
        parameter, buffer, submodule, method or plain attribute; a path to a submodule, parameter or buffer; rows of
        a fused ``nn.Linear``; for ``attention``, also a function of ``module``). A class with no instance there, and a
        tensor a forward leaves when the forward failed (``forwarded``), cannot be checked and are left alone."""
        where = _Where(self.source, self.text)
        for contract, entries in self.attributes.items():
            owners = [m for m in model.modules() if contract_class(m) == contract]
            if not owners:
                continue
            taken: dict[str, str] = {}
            for name, yours in entries.items():
                kind = ATTRIBUTES[contract][name]
                if kind not in ("method", "weights"):  # one of yours stands for one contract name
                    if yours in taken:
                        where.fail(("attributes", contract, name), f"your {yours!r} already stands for "
                                   f"`{contract}.{taken[yours]}`; each contract attribute needs its own", value=yours)
                    taken[yours] = name
                if not _is_plain(yours):
                    problem = next((p for p in (_path_problem(m, yours, kind) for m in owners) if p), None)
                    if problem:
                        where.fail(("attributes", contract, name), problem, value=yours)
                    continue
                if name == "attention" and not any(_has(m, yours) for m in owners) and module is not None \
                        and callable(getattr(module, yours, None)):
                    continue
                if any(_has(m, yours) for m in owners):
                    problem = next((p for p in (_kind_problem(_value(m, yours), kind, yours) for m in owners) if p),
                                   None)
                    if problem:
                        where.fail(("attributes", contract, name), problem, value=yours)
                    continue
                if not forwarded and kind == "weights":
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


# ------------------------------------------------------------------------------------------- structural forms
def _is_plain(yours: Any) -> bool:
    """A name of the instance itself (not a path, not rows of a fused Linear)."""
    return isinstance(yours, str) and yours.isidentifier()


def _valid_attribute(yours: Any) -> bool:
    return isinstance(yours, str) and bool(_PATH.match(yours) or _SLICE.match(yours))


def _valid_argument(yours: Any) -> bool:
    if yours is False:
        return True
    if isinstance(yours, dict):
        return set(yours) == set(_CLONE_KEYS) and all(isinstance(v, str) and v.isidentifier() for v in yours.values())
    return isinstance(yours, str) and (yours.isidentifier() or bool(_ITEM.match(yours)))


def _argument_names(yours: str | bool | dict) -> list[str]:
    """Your constructor's parameters an argument entry names."""
    if yours is False:
        return []
    if isinstance(yours, dict):
        return [yours[k] for k in _CLONE_KEYS]
    item = _ITEM.match(yours)
    return [item.group("name") if item else yours]


def fused_rows(yours: str) -> tuple[str, int, int] | None:
    """``qkv[d:2d]`` -> ("qkv", 1, 2): the fused Linear's path and its row blocks, in units of ``d``."""
    m = _SLICE.match(yours)
    if not m:
        return None
    def blocks(bound: str) -> int:
        return 0 if bound == "0" else int(bound[:-1] or 1)
    return m.group("path"), blocks(m.group("start")), blocks(m.group("stop"))


def _check_slices(where: _Where, owner: str, entries: dict[str, str]) -> None:
    """The row blocks of each fused Linear are disjoint, non-empty and cover blocks 0..k-1 (k = the last stop)."""
    fused: dict[str, list[tuple[int, int, int, str]]] = {}
    for order, (name, yours) in enumerate(entries.items()):
        rows = fused_rows(yours)
        if rows is None:
            continue
        if ATTRIBUTES[owner].get(name) != "Linear":
            where.fail(("attributes", owner, name), f"rows of a fused Linear stand only for a Linear; `{owner}.{name}` "
                       f"is a {ATTRIBUTES[owner].get(name)}", value=yours)
        if rows[2] <= rows[1]:
            where.fail(("attributes", owner, name), "an empty or reversed row range", value=yours)
        fused.setdefault(rows[0], []).append((rows[1], rows[2], order, name))
    for path, blocks in fused.items():
        blocks.sort()  # by rows, then by the map's order: the later entry is the one named
        covered = 0
        for start, stop, _, name in blocks:
            if start > covered:
                where.fail(("attributes", owner, name), f"the rows of {path!r} must be mapped without gaps or "
                           f"overlaps from 0 to its last row (rows {_d(covered)}:{_d(start)} are not)",
                           value=entries[name])
            if start < covered:
                where.fail(("attributes", owner, name), f"the rows of {path!r} must be mapped without gaps or "
                           f"overlaps (rows {_d(start)}:{_d(min(stop, covered))} are mapped twice)",
                           value=entries[name])
            covered = stop


def _check_structural_arguments(where: _Where, owner: str, entries: dict[str, Any]) -> None:
    """``{clone, count}`` only for an Encoder's or Decoder's ``layers``; the items ``name.i`` of one Sequential
    numbered 0, 1, ... once each."""
    items: dict[str, dict[int, str]] = {}
    for name, yours in entries.items():
        if isinstance(yours, dict) and not (owner in ("Encoder", "Decoder") and name == "layers"):
            where.fail(("arguments", owner, name), "{clone, count} stands only for the `layers` of an Encoder or "
                       "a Decoder", value=yours)
        item = _ITEM.match(yours) if isinstance(yours, str) else None
        if item:
            slots = items.setdefault(item.group("name"), {})
            index = int(item.group("index"))
            if index in slots:
                where.fail(("arguments", owner, name), f"item {index} of your {item.group('name')!r} is already "
                           f"`{slots[index]}`", value=yours)
            slots[index] = name
    for yours, slots in items.items():
        if sorted(slots) != list(range(len(slots))):
            last = slots[max(slots)]
            where.fail(("arguments", owner, last), f"the items of your {yours!r} must be numbered 0 to "
                       f"{len(slots) - 1} (the Sequential the kit builds), got {sorted(slots)}",
                       value=entries[last])


def _d(k: int) -> str:
    return "0" if k == 0 else "d" if k == 1 else f"{k}d"


def _resolve_path(owner: nn.Module, path: str) -> Any:
    """What ``path`` (``linears.0``, ``src_embed.1.pe``) reaches from ``owner`` by your names; AttributeError."""
    obj: Any = owner
    for part in path.split("."):
        hidden = vars(obj).get("_kit_hidden", {}) if isinstance(obj, nn.Module) else {}
        if part in hidden:
            obj = hidden[part]
        elif isinstance(obj, nn.Module) and part in obj._modules:
            obj = obj._modules[part]
        elif part.isdigit() and isinstance(obj, (nn.ModuleList, nn.Sequential, tuple, list)) and int(part) < len(obj):
            obj = obj[int(part)]  # an index of a ModuleList or Sequential, or of a shape (``pe.shape.1``)
        else:
            obj = getattr(obj, part)
    return obj


def _path_problem(owner: nn.Module, yours: str, kind: str = "") -> str | None:
    """Why ``yours`` (a path or rows of a fused Linear) reaches nothing usable on ``owner`` for an attribute of
    ``kind`` (``ATTRIBUTES``: a number only for "int"/"float"), or None."""
    rows = fused_rows(yours)
    path = rows[0] if rows else yours
    try:
        target = _resolve_path(owner, path)
    except (AttributeError, IndexError, TypeError):
        head = path.split(".")[0]
        names = sorted(_member_names(owner) | set(vars(owner).get("_kit_hidden", {})))
        close = difflib.get_close_matches(head, names, n=3)
        return (f"the probe model's `{contract_class(owner)}` (your `{type(owner).__name__}`) has nothing at "
                f"{path!r}" + (f" (closest: {', '.join(repr(c) for c in close)})" if close else ""))
    if rows:
        if not isinstance(target, nn.Linear):
            return f"{path!r} is a {type(target).__name__}, not the nn.Linear whose rows {yours!r} names"
        if target.out_features < rows[2] * target.in_features:
            return (f"{path!r} is Linear({target.in_features}, {target.out_features}): it has no rows "
                    f"{_d(rows[1])}:{_d(rows[2])} (d = {target.in_features})")
    elif kind not in ("int", "float") and not isinstance(target, (nn.Module, torch.Tensor)):
        return f"{path!r} is a {type(target).__name__}; a path must reach a submodule, parameter or buffer"
    else:
        return _kind_problem(target, kind, path)
    return None


#: What each kind of contract attribute (``ATTRIBUTES``) must be, and how the message says it.
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a number (an int)"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "vector": (lambda v: isinstance(v, torch.Tensor), "a parameter (a tensor)"),
    "buffer": (lambda v: isinstance(v, torch.Tensor), "a buffer (a tensor)"),
    "method": (callable, "something callable"),
    # a rate stands for a Dropout module where the code calls F.dropout(x, p) itself
    "Dropout": (lambda v: isinstance(v, nn.Module) or (isinstance(v, float) and not isinstance(v, bool)),
                "a submodule (a Dropout) or the rate your code drops with"),
}


def _value(owner: nn.Module, yours: str) -> Any:
    try:
        return getattr(owner, yours)
    except Exception:  # noqa: BLE001: a property that raises exists; its kind cannot be told
        return _UNKNOWN


_UNKNOWN = object()


def _kind_problem(value: Any, kind: str, yours: str) -> str | None:
    """Why ``value`` (what your ``yours`` is on the probe model) cannot stand for a contract attribute of ``kind``:
    a number for an int, a tensor for a parameter or buffer, a submodule for a Linear, an Embedding, a Dropout, a
    ModuleList or a contract class (and, when it is one of the contract's classes seen through the map, that class),
    or None."""
    if value is _UNKNOWN or kind == "weights":
        return None
    if kind in _KINDS:
        ok, wanted = _KINDS[kind]
        return None if ok(value) else f"{yours!r} is a {type(value).__name__}; this attribute needs {wanted}"
    if not isinstance(value, nn.Module):
        return f"{yours!r} is a {type(value).__name__}; this attribute needs a submodule (a {kind})"
    if kind in SIGNATURES and contract_class(value) in SIGNATURES and contract_class(value) != kind:
        return f"{yours!r} is your {type(value).__name__}, the contract's `{contract_class(value)}`, not a `{kind}`"
    return None


class _FusedLinear(nn.Module):
    """Your fused ``nn.Linear`` (``qkv``) whose row blocks the kit registered as the contract's projections: it
    computes ``x @ cat(weights).T + cat(biases)`` from them, so your code and the contract see the same
    parameters."""

    def __init__(self, parts: list[nn.Linear], fused: nn.Linear) -> None:
        super().__init__()
        object.__setattr__(self, "_parts", parts)  # registered on the owner under the contract's names
        self.in_features, self.out_features = fused.in_features, fused.out_features

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([p.weight for p in self._parts], 0)

    @property
    def bias(self) -> torch.Tensor | None:
        biases = [p.bias for p in self._parts]
        return None if biases[0] is None else torch.cat(biases, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


def _part(fused: nn.Linear, start: int, stop: int) -> nn.Linear:
    """A ``Linear`` holding rows ``start*d:stop*d`` of ``fused`` (copies, new parameters)."""
    d = fused.in_features
    part = nn.Linear(d, (stop - start) * d, bias=fused.bias is not None, device=fused.weight.device,
                     dtype=fused.weight.dtype)
    with torch.no_grad():
        part.weight = nn.Parameter(fused.weight[start * d:stop * d].detach().clone(),
                                   requires_grad=fused.weight.requires_grad)
        if fused.bias is not None:
            part.bias = nn.Parameter(fused.bias[start * d:stop * d].detach().clone(),
                                     requires_grad=fused.bias.requires_grad)
    return part


def _register(owner: nn.Module, name: str, target: Any) -> None:
    if isinstance(target, nn.Module):
        owner._modules[name] = target
    elif isinstance(target, nn.Parameter):
        owner._parameters[name] = target
    else:
        owner._buffers[name] = target


def _restructure(owner: nn.Module, attributes: dict[str, str]) -> None:  # attributes: the class's paths
    """Register what the map's paths and fused rows reach under the contract's names on ``owner``; the containers
    they are reached through leave ``owner``'s registries and stay reachable by your names (``_kit_hidden``), a
    fused Linear as a :class:`_FusedLinear` of the new parts; anything in a hidden container that no entry maps
    stays registered, as ``<path>_<i>``. Once per instance."""
    if vars(owner).get("_kit_restructured"):
        return
    object.__setattr__(owner, "_kit_restructured", True)
    hidden: dict[str, Any] = vars(owner).setdefault("_kit_hidden", {})
    targets: dict[str, Any] = {}
    fused: dict[str, list[tuple[int, int, str]]] = {}
    for name, yours in attributes.items():
        if _is_plain(yours):
            continue
        rows = fused_rows(yours)
        if rows:
            fused.setdefault(rows[0], []).append((rows[1], rows[2], name))
            continue
        try:
            target = _resolve_path(owner, yours)
        except (AttributeError, IndexError, TypeError):
            continue  # the map's check names it (``check_attributes``); the tests see it missing
        if isinstance(target, (nn.Module, torch.Tensor)):
            targets[name] = target  # a number (``lut.num_embeddings``) is read at each access (``__getattr__``)
    for path, blocks in fused.items():
        try:
            linear = _resolve_path(owner, path)
        except (AttributeError, IndexError, TypeError):
            continue
        if not isinstance(linear, nn.Linear) or linear.out_features < max(b[1] for b in blocks) * linear.in_features:
            continue  # the map's check names it (``check_attributes``)
        parts = {name: _part(linear, start, stop) for start, stop, name in sorted(blocks)}
        targets.update(parts)
        proxy = _FusedLinear(list(parts.values()), linear)
        parent, _, last = path.rpartition(".")
        if parent:
            container = _resolve_path(owner, parent)
            container._modules[last] = proxy
        else:
            hidden[last] = proxy
    heads = {_head(attributes[n]) for n in targets}
    reached = {id(t) for t in targets.values()}
    order = list(owner._modules)
    for head in heads:
        for registry in ("_modules", "_parameters", "_buffers"):
            if head in getattr(owner, registry):
                hidden.setdefault(head, getattr(owner, registry).pop(head))
    for name, target in targets.items():
        _register(owner, name, target)
    object.__setattr__(owner, "_kit_registered", frozenset(targets))
    for head in heads:  # what a hidden container holds that no entry maps stays in the model
        container = hidden.get(head)
        if isinstance(container, nn.Module) and not isinstance(container, _FusedLinear):
            for sub, child in container.named_children():
                if id(child) not in reached and not any(id(m) in reached for m in child.modules()):
                    owner._modules[f"{head}_{sub}"] = child
    # keep the registry in your order: each contract name where its container was
    first = {n: order.index(_head(attributes[n])) if _head(attributes[n]) in order else len(order) for n in targets}
    items = sorted(owner._modules.items(), key=lambda kv: first.get(kv[0], order.index(kv[0]) if kv[0] in order
                                                                    else len(order)))
    owner._modules.clear()
    owner._modules.update(items)


def _head(yours: str) -> str:
    rows = fused_rows(yours)
    return (rows[0] if rows else yours).split(".")[0]


#: How many adapted contract methods (forward, encode, decode, ...) are running: inside one, a name that is both
#: yours and the contract's (your ``src_embed`` is ``Sequential(embedding, positions)``, the contract's the
#: embedding) means yours; outside, the contract's (the kit's own reads).
_INSIDE = [0]


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
        header = bool(line) and self.text.splitlines()[line - 1].lstrip().startswith("[")
        if value is _NO_VALUE or (isinstance(value, dict) and (len(path) < 3 or header)):  # a table, not inline
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


#: The mask parameters of each contract method (name, position after ``self``): with ``masks = "no-head-dim"`` the
#: kit drops their size-1 head dimension at the call.
MASK_ARGUMENTS: dict[str, dict[str, tuple[tuple[str, int], ...]]] = {
    "MultiHeadAttentionBlock": {"forward": (("mask", 3),)},
    "EncoderBlock": {"forward": (("src_mask", 1),)},
    "Encoder": {"forward": (("mask", 1),)},
    "DecoderBlock": {"forward": (("src_mask", 2), ("tgt_mask", 3))},
    "Decoder": {"forward": (("src_mask", 2), ("tgt_mask", 3))},
    "Transformer": {"encode": (("src_mask", 1),), "decode": (("src_mask", 1), ("tgt_mask", 3)),
                    "forward": (("src_mask", 2), ("tgt_mask", 3))},
}


class MaskLayoutError(ValueError):
    """A mask the map's ``masks = "no-head-dim"`` cannot express (one per head: ``[B, h, Lq, Lk]``, h > 1)."""


def _drop_head(mask: Any) -> Any:
    """A contract mask (broadcast to ``[B, h, Lq, Lk]`` from the right) without its head dimension:
    ``[B|1, Lq|1, Lk]``. None stays None; a mask with a different mask per head raises :class:`MaskLayoutError`."""
    if not isinstance(mask, torch.Tensor) or mask.dim() > 4:
        return mask
    mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    if mask.shape[1] != 1 and not bool((mask == mask[:, :1]).all()):
        raise MaskLayoutError(f"a mask of shape {tuple(mask.shape)} has one mask per head; your modules take masks "
                              "without the head dimension (the map's masks = \"no-head-dim\")")
    return mask[:, 0]


def _wrapped(method: Callable, masks: tuple[tuple[str, int], ...]) -> Callable:
    """``method`` counted in ``_INSIDE`` while it runs, its ``masks`` arguments without the head dimension."""
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if masks and not _INSIDE[0]:  # the kit's call; your own calls pass your layout already
            args = tuple(_drop_head(a) if any(i == n for _, i in masks) else a for n, a in enumerate(args))
            kwargs = {k: _drop_head(v) if any(k == name for name, _ in masks) else v for k, v in kwargs.items()}
        _INSIDE[0] += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            _INSIDE[0] -= 1
    call.__name__, call.__qualname__, call.__doc__ = method.__name__, method.__qualname__, method.__doc__
    call.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    return call


def contract_inputs(module: nn.Module, inputs: tuple) -> tuple:
    """The inputs of a call of ``module`` (in its ``forward``'s order) with its masks in the contract's layout: a
    call your own code made, under ``masks = "no-head-dim"``, passed ``[B, Lq|1, Lk]`` masks, which get their head
    dimension back (``[B, 1, Lq|1, Lk]``); the kit's own calls, and every call under the contract's layout, are
    returned unchanged. Call it before the call runs (a forward pre-hook)."""
    positions = [i for _, i in getattr(type(module), "_contract_mask_positions", ())]
    if not positions or not _INSIDE[0]:
        return inputs
    return tuple(x[:, None] if i in positions and isinstance(x, torch.Tensor) and x.dim() == 3 else x
                 for i, x in enumerate(inputs))


def _adapted_class(contract: str, yours: type, attributes: dict[str, str], module: ModuleType | None = None,
                   masks: str = HEAD_DIM) -> type:
    """A subclass of ``yours`` that answers to the contract's attribute names and your own (see ``_restructure``
    for paths and fused rows), takes the contract's mask layout, and finds a module-level ``attention``."""
    kinds = ATTRIBUTES.get(contract, {})
    renames = {c: y for c, y in attributes.items() if _is_plain(y) and kinds.get(c) != "method"}
    to_contract = {y: c for c, y in renames.items()}
    paths = {c: y for c, y in attributes.items() if not _is_plain(y)}
    shared = {_head(y) for y in paths.values()} & set(attributes)
    unsliced = {c: y for c, y in paths.items() if not fused_rows(y)}

    def __getattr__(self, name: str) -> Any:  # only reached when normal lookup fails
        hidden = self.__dict__.get("_kit_hidden")
        if hidden and name in hidden and (name not in shared or _INSIDE[0]):
            return hidden[name]
        if name in unsliced and name not in self.__dict__.get("_kit_registered", ()):
            return _resolve_path(self, unsliced[name])  # a number below the instance, read now
        if name in to_contract:  # your name for a slot that now has the contract's name
            try:
                return nn.Module.__getattr__(self, to_contract[name])
            except AttributeError:
                pass
        yours_name = attributes.get(name)
        if isinstance(yours_name, str) and _is_plain(yours_name) and yours_name != name:
            if yours_name in vars(self):  # a plain attribute kept under your name
                return vars(self)[yours_name]
            if kinds.get(name) == "method" or hasattr(type(self), yours_name):  # a method, or a submodule for one
                return getattr(self, yours_name)
        return nn.Module.__getattr__(self, name)

    namespace: dict[str, Any] = {"__getattr__": __getattr__, "__module__": yours.__module__,
                                 "__qualname__": yours.__qualname__, "_contract_name": contract,
                                 "_contract_renames": renames, "_contract_paths": paths}
    static = attributes.get("attention") if contract == "MultiHeadAttentionBlock" else None
    if static and isinstance(inspect.getattr_static(yours, static, None), staticmethod):
        namespace["attention"] = inspect.getattr_static(yours, static)
    elif static and not hasattr(yours, static) and callable(getattr(module, static, None)):
        namespace["attention"] = staticmethod(getattr(module, static))  # a function of your module
    mask_args = MASK_ARGUMENTS.get(contract, {}) if masks == NO_HEAD_DIM else {}
    namespace["_contract_mask_positions"] = mask_args.get("forward", ())
    if mask_args or shared:
        for method in ("forward", *(n for n, k in kinds.items() if k == "method")):
            own = inspect.getattr_static(yours, method, None)
            if inspect.isfunction(own) and not (method in attributes and attributes[method] != method):
                namespace[method] = _wrapped(own, mask_args.get(method, ()))
    if paths:
        def train(self: nn.Module, mode: bool = True) -> nn.Module:
            yours.train(self, mode)
            for held in vars(self).get("_kit_hidden", {}).values():
                if isinstance(held, nn.Module):
                    held.train(mode)
            return self
        namespace["train"] = train
    return type(yours.__name__, (yours,), namespace)


def _contract_signature(contract: str, target: Callable, arguments: dict[str, str | bool]) -> inspect.Signature:
    """The contract's parameters in the contract's order, with your defaults; your keyword-only extras after."""
    theirs = inspect.signature(target).parameters
    params = []
    for name in SIGNATURES[contract]:
        yours = arguments.get(name, name)
        first = (_argument_names(yours) or [None])[0]
        default = theirs[first].default if first in theirs else inspect.Parameter.empty
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
    items: dict[str, dict[int, Any]] = {}
    for name, value in bound.arguments.items():
        if name in SIGNATURES[contract]:
            yours = arguments.get(name, name)
            item = _ITEM.match(yours) if isinstance(yours, str) else None
            if isinstance(yours, dict):  # one layer and a count: your constructor copies it
                layers = list(value)
                call[yours["clone"]], call[yours["count"]] = (layers[0] if layers else None), len(layers)
            elif item:
                items.setdefault(item.group("name"), {})[int(item.group("index"))] = value
            elif yours is not False:
                call[yours] = value
        elif isinstance(value, dict) and signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            call.update(value)
        else:
            call[name] = value
    for name, parts in items.items():  # "src_embed.0", "src_embed.1": your parameter takes them in a Sequential
        call[name] = nn.Sequential(*(parts[i] for i in sorted(parts)))
    return target(**call)


def _load_clones(model: nn.Module, contract: str, arguments: dict[str, str | bool], signature: inspect.Signature,
                 args: tuple, kwargs: dict) -> None:
    """After a constructor that deep-copied one layer N times: each copy gets the weights of the layer the kit gave
    for its place, so the N layers differ as the contract's would."""
    for name, yours in arguments.items():
        if not isinstance(yours, dict):
            continue
        given = signature.bind(*args, **kwargs).arguments.get(name)
        copies = getattr(model, name, None)
        if given is None or not isinstance(copies, (nn.ModuleList, nn.Sequential)) or len(copies) != len(given):
            continue
        with torch.no_grad():
            for mine, theirs in zip(copies, given):
                if mine is not theirs:
                    mine.load_state_dict(theirs.state_dict())


@dataclass
class _Adapter:
    module: ModuleType
    impl_map: ImplMap
    by_type: dict[type, type] = field(default_factory=dict)  # your class -> its adapted subclass

    def adapt_tree(self, root: Any) -> Any:
        """Switch every instance of your mapped classes under ``root`` to its adapted subclass; rename slots."""
        if not isinstance(root, nn.Module):
            return root
        for m in list(root.modules()):
            adapted = self.by_type.get(type(m))
            if adapted is not None:
                m.__class__ = adapted
            renames = getattr(type(m), "_contract_renames", None)
            if renames:
                _rename_slots(m, renames)
            paths = getattr(type(m), "_contract_paths", None)
            if paths:
                _restructure(m, paths)
        return root

    def build(self) -> ModuleType:
        out = ModuleType(f"{self.module.__name__}+impl_map", f"{self.module.__name__} seen through an --impl-map")
        out.__file__ = getattr(self.module, "__file__", None)
        out.__kit_masks__ = self.impl_map.masks
        for contract in REQUIRED_NAMES + OPTIONAL_NAMES:
            yours = getattr(self.module, self.impl_map.classes.get(contract, contract), None)
            if yours is None:
                continue
            if isinstance(yours, type) and issubclass(yours, nn.Module):
                cls = _adapted_class(contract, yours, self.impl_map.attributes.get(contract, {}), self.module,
                                     self.impl_map.masks)
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
            _load_clones(self, contract, arguments, signature, args, kwargs)

        __init__.__signature__ = signature.replace(parameters=[
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *signature.parameters.values()])
        return __init__

    def _function(self, contract: str, yours: Callable, arguments: dict[str, str | bool]) -> Callable:
        signature = _contract_signature(contract, yours, arguments)
        adapter = self

        def function(*args: Any, **kwargs: Any) -> Any:
            return adapter.adapt_tree(_call_yours(contract, yours, signature, arguments, args, kwargs))

        function.__signature__ = signature
        function._kit_not_taken = frozenset(n for n, y in arguments.items() if y is False)
        function.__name__ = function.__qualname__ = contract
        function.__doc__ = getattr(yours, "__doc__", None)
        return function


def not_taken(factory: Any) -> frozenset[str]:
    """The contract arguments ``factory`` (a builder seen through a map) does not take (the map's ``false``)."""
    return getattr(factory, "_kit_not_taken", frozenset())


def adapt(module: ModuleType, impl_map: ImplMap, *, register: bool = True) -> ModuleType:
    """``module`` seen through ``impl_map``: a new module exposing the contract's names (see the module docstring).

    Registered in ``sys.modules`` under its own name so pickling and ``importlib`` find it (unless ``register`` is
    false: a throwaway view)."""
    adapted = _Adapter(module, impl_map).build()
    if register:
        sys.modules[adapted.__name__] = adapted
    return adapted
