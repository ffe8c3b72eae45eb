"""Diagnose an implementation's API against the contract before any numerical check, and propose a map.

Every deviation is a :class:`Finding` against its clause (``api.names``, ``api.signatures``, ``api.attributes``,
``build.structure``, ``ln.per-feature-affine``) with the closest match found: a class one letter off
(``InputEmbedding`` for ``InputEmbeddings``), a constructor parameter under another name, the one ``nn.Linear``
child of a ``ProjectionLayer`` called ``project``. Where the match is unambiguous it goes into the proposed
:class:`~reference.kit.adapter.ImplMap`, which the kit can use (and print, for the user to save and edit).
"""

from __future__ import annotations

import difflib
import inspect
import re
from types import ModuleType
from typing import Any

import torch
from torch import nn

from reference.kit import guard
from reference.kit.adapter import ImplMap, adapt
from reference.kit.findings import Diagnosis, Finding
from reference.kit.components import BY_CONTRACT, COMPONENTS
from reference.kit.components import ATTRIBUTES, REQUIRED_NAMES, SIGNATURES

#: Sizes of the model the diagnosis builds: small, with every size distinct so shapes tell the parts apart.
PROBE = {"src_vocab_size": 11, "tgt_vocab_size": 13, "src_seq_len": 17, "tgt_seq_len": 18, "d_model": 8, "N": 1,
         "h": 2, "dropout": 0.1, "d_ff": 16}
#: Where each contract class sits in a built Transformer (the registry's ``probe_path``: attribute paths, ``[0]``
#: indexes a ModuleList), in the order the diagnosis visits them: the model, then down the tree, the norm last.
PATHS = {c: BY_CONTRACT[c].probe_path for c in (
    "Transformer", "Encoder", "Decoder", "InputEmbeddings", "PositionalEncoding", "ProjectionLayer", "EncoderBlock",
    "DecoderBlock", "MultiHeadAttentionBlock", "FeedForwardBlock", "ResidualConnection", "LayerNormalization")}


#: Names other walkthroughs give the contract's classes (the registry's ``synonyms``: the Annotated Transformer's,
#: Hugging Face's, the acronyms), lower case, without underscores. A candidate spelled so is matched before any
#: fuzzy match.
SYNONYMS = {c.contract: c.synonyms for c in COMPONENTS.values() if c.synonyms}


def _synonym(contract: str, candidates: list[str]) -> str | None:
    hits = [c for c in candidates if c.lower().replace("_", "") in SYNONYMS.get(contract, ())]
    return hits[0] if len(hits) == 1 else None


def _closest(name: str, candidates: list[str], cutoff: float = 0.6) -> str | None:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=cutoff)
    if close:
        return close[0]
    lowered = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[close[0]] if close else None


# ------------------------------------------------------------------------------------------------ names
def _names(module: ModuleType, user: ImplMap) -> tuple[list[Finding], dict[str, str]]:
    public = {n: v for n, v in vars(module).items() if not n.startswith("_")}
    classes = [n for n, v in public.items() if isinstance(v, type) and issubclass(v, nn.Module)]
    functions = [n for n, v in public.items() if inspect.isfunction(v)]
    taken = {user.classes.get(c, c) for c in REQUIRED_NAMES}
    findings, proposed = [], {}
    for contract in REQUIRED_NAMES:
        if hasattr(module, user.classes.get(contract, contract)):
            continue
        pool = [n for n in (functions if contract == "build_transformer" else classes) if n not in taken]
        found = _synonym(contract, pool) or _closest(contract, pool)
        if found:
            proposed[contract] = found
            taken.add(found)
            message = f"`{contract}` not found; closest match: `{found}`"
        else:
            message = f"`{contract}` not found, and nothing close to it among {sorted(pool) or 'no candidates'}"
        findings.append(Finding("api.names", contract, contract, found, message))
    return findings, proposed


# ------------------------------------------------------------------------------------------------ signatures
def _positional(obj: Any) -> list[str]:
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]


def _abbreviates(short: str, name: str) -> bool:
    """``attn`` for ``self_attention_block``, ``ff`` for ``feed_forward_block``: ``short`` is a subsequence of
    ``name`` starting at the first letter of one of its words."""
    short = short.lower().replace("_", "")
    words = name.lower().split("_")
    for i, word in enumerate(words):
        if word and short and word[0] == short[0]:
            rest = iter("".join(words[i:]))
            if all(ch in rest for ch in short):
                return True
    return False


#: What a constructor argument means, told by its name: (kind, whole names, words that say it anywhere in a name
#: split at ``_`` and digits). Checked in order, so ``vocab_size`` is a vocabulary size before ``size`` makes it a
#: width, and ``num_heads`` a count before ``head_dim`` is a width. A proposed map never pairs a contract argument
#: with one of yours of another kind (``features``, a width, with ``N``, a count).
ARGUMENT_KINDS = (
    ("vocabulary size", {"ntoken", "ntokens", "num_embeddings"}, {"vocab", "vocabulary"}),
    ("sequence length", {"block_size", "n_positions", "n_ctx"}, {"seq", "len", "length", "positions", "context"}),
    ("epsilon", set(), {"eps", "epsilon"}),
    ("rate", {"p"}, {"dropout", "drop", "pdrop", "rate", "prob"}),
    ("count", {"n", "h", "layers", "depth", "heads", "nhead", "nheads", "nlayers", "nlayer"}, set()),
    ("width", {"d_model", "d_ff", "dmodel", "dff", "d_k", "d_embed", "n_embd", "emb_size"},
     {"dim", "hidden", "size", "width", "features", "units", "channels", "inner"}),
)
#: ``num_layers``, ``n_heads``, ``number_of_blocks``: a count word after a count prefix.
_COUNT_WORDS = ({"n", "num", "number", "nb"}, {"layers", "layer", "heads", "head", "blocks", "block"})


def argument_kind(name: str) -> str | None:
    """The kind of a constructor argument by its name (``ARGUMENT_KINDS``), or None when its name does not say."""
    lowered = name.lower()
    words = [w for w in re.split(r"[_\d]+", lowered) if w]
    for kind, names, anywhere in ARGUMENT_KINDS:
        if lowered in names or set(words) & anywhere:
            return kind
        if kind == "count" and len(words) > 1 and words[0] in _COUNT_WORDS[0] and set(words[1:]) & _COUNT_WORDS[1]:
            return kind
    return None


def _contract_kind(contract: str, argument: str) -> str | None:
    """The kind of a contract argument: a module (another contract class, a ``ModuleList``) by the registry, else by
    its name."""
    attribute = ATTRIBUTES.get(contract, {}).get(argument)
    if attribute == "ModuleList" or attribute in SIGNATURES:
        return "module"
    return argument_kind(argument)


def _same_kind(contract: str, wanted: str, yours: str) -> bool:
    """Whether ``yours`` may receive the contract's ``wanted``: their kinds agree, or one of them is unknown."""
    a, b = _contract_kind(contract, wanted), argument_kind(yours)
    return a is None or b is None or a == b


def _match_arguments(contract: str, wanted: tuple[str, ...], theirs: list[str], missing: list[str],
                     spare: list[str]) -> tuple[dict[str, str | bool], dict[str, str]]:
    """Pair the contract's untaken arguments with yours: by name, then by abbreviation, then by position, then the
    last one left, never across kinds (``argument_kind``); a contract argument with nothing of yours left gets
    ``False`` (the kit leaves it out)."""
    assigned: dict[str, str | bool] = {}
    how: dict[str, str] = {}
    pending = list(missing)

    def take(w: str, found: str, reason: str) -> None:
        assigned[w], how[w] = found, reason
        spare.remove(found)
        pending.remove(w)

    def fits(w: str) -> list[str]:
        return [c for c in spare if _same_kind(contract, w, c)]

    for w in list(pending):
        found = _closest(w, fits(w), cutoff=0.5)
        if found:
            take(w, found, "closest match")
    for w in list(pending):
        hits = [c for c in fits(w) if _abbreviates(c, w)]
        if len(hits) == 1:
            take(w, hits[0], "its abbreviation")
    if len(pending) == len(spare):
        for w in list(pending):
            position = wanted.index(w)
            if position < len(theirs) and theirs[position] in fits(w):
                take(w, theirs[position], "yours at the same place")
    if len(pending) == 1 and len(spare) == 1 and fits(pending[0]):
        take(pending[0], spare[0], "the one argument of yours left")
    if not spare:
        assigned.update({w: False for w in pending})
    return assigned, how


def _a(kind: str | None) -> str:
    return f"{'an' if str(kind)[:1] in 'aeiou' else 'a'} {kind}"


def _unmatched(contract: str, w: str, theirs: list[str], spare: list[str]) -> str:
    """The finding's message for a contract argument left unmatched: what of yours is left, and why not it."""
    other = [c for c in spare if not _same_kind(contract, w, c)]
    head = f"`{contract}{tuple(theirs)}` takes no argument for the contract's `{w}`"
    if other:
        kinds = ", ".join(f"`{c}` ({_a(argument_kind(c))})" for c in other)
        return (f"{head} ({_a(_contract_kind(contract, w))}); not mapped to {kinds}: another kind (map it yourself "
                "if it is one)")
    return f"{head}; none of {spare} is close to it"


def _signatures(module: ModuleType, m: ImplMap) -> tuple[list[Finding], dict[str, dict[str, str]]]:
    """Findings (an argument order of its own is the non-blocking ``(order)`` finding) and proposed entries."""
    findings, proposed = [], {}
    for contract, wanted in SIGNATURES.items():
        obj = getattr(module, m.classes.get(contract, contract), None)
        if obj is None:
            continue
        theirs = _positional(obj)
        given = m.arguments.get(contract, {})
        mapped = [given.get(w, w) for w in wanted]
        missing = [w for w, y in zip(wanted, mapped) if y is not False and y not in theirs]
        spare = [t for t in theirs if t not in mapped]
        assigned, how = _match_arguments(contract, wanted, theirs, missing, spare)
        for w in missing:
            found = assigned.get(w)
            if found:
                proposed.setdefault(contract, {})[w] = found
                message = (f"`{contract}{tuple(theirs)}`: the contract's argument `{w}` is not taken; {how[w]}: "
                           f"`{found}`")
            elif found is False:  # nothing of yours is left to receive it: the kit leaves it out
                proposed.setdefault(contract, {})[w] = False
                message = (f"`{contract}{tuple(theirs)}` takes no argument for the contract's `{w}` (the kit leaves "
                           "it out)")
            else:
                message = _unmatched(contract, w, theirs, spare)
            findings.append(Finding("api.signatures", contract, w, found or None, message))
        order = [given.get(w, proposed.get(contract, {}).get(w, w)) for w in wanted]
        if [t for t in theirs if t in order] != [o for o in order if o in theirs]:
            findings.append(Finding("api.signatures", contract, "(order)", None,
                                    f"`{contract}{tuple(theirs)}` takes the contract's arguments "
                                    f"{tuple(wanted)} in another order (an `[arguments.{contract}]` table in "
                                    "your map accepts it, empty if no name differs)", blocking=False))
            proposed.setdefault(contract, {})  # so the printed map holds the table that accepts the order
    return findings, proposed


# ------------------------------------------------------------------------------------------------ attributes
def _kind_ok(value: Any, kind: str, owner: nn.Module, name: str, contract_types: dict[str, set[type]]) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("Linear", "Embedding", "Dropout", "ModuleList"):
        return isinstance(value, getattr(nn, kind))
    if kind == "vector":
        return isinstance(value, nn.Parameter) and value.dim() == 1
    if kind == "buffer":
        return name in owner._buffers
    if kind == "method":
        return callable(value) and not isinstance(value, nn.Module)
    if kind == "weights":
        return isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter) and value.dim() == 4
    types = tuple(contract_types.get(kind, ()))
    return isinstance(value, nn.Module) and (not types or isinstance(value, types)
                                             or any(issubclass(t, type(value)) for t in types))


def _members(owner: nn.Module) -> dict[str, Any]:
    """Attributes an instance holds (plain, parameters, buffers, submodules) and its class's public methods."""
    out: dict[str, Any] = {n: v for n, v in vars(owner).items() if not n.startswith("_") and n != "training"}
    out.update(owner._parameters)
    out.update(owner._buffers)
    out.update(owner._modules)
    for n, v in inspect.getmembers(type(owner)):
        if not n.startswith("_") and n not in vars(nn.Module) and callable(v) and n not in out:
            out[n] = getattr(owner, n)
    return out


def _pick_vector(contract: str, candidates: list[str], owner: nn.Module) -> str | None:
    """LayerNorm's gain and shift told apart by their initial values: ones for ``alpha``, zeros for ``bias``."""
    want = 1.0 if contract == "alpha" else 0.0
    hits = [c for c in candidates if torch.all(getattr(owner, c).detach() == want)]
    return hits[0] if len(hits) == 1 else None


#: Weight shapes that tell same-kind children apart in the probe model (d_model 8, d_ff 16, target vocabulary 13).
SHAPES = {("FeedForwardBlock", "linear_1"): (16, 8), ("FeedForwardBlock", "linear_2"): (8, 16),
          ("ProjectionLayer", "proj"): (13, 8), **{("MultiHeadAttentionBlock", w): (8, 8)
                                                    for w in ("w_q", "w_k", "w_v", "w_o")}}
#: Name tokens that tell the four attention projections apart (``q_proj``, ``query``, ``wq``, ``out_proj``, ...).
HINTS = {"w_q": ("q", "query", "queries"), "w_k": ("k", "key", "keys"), "w_v": ("v", "value", "values"),
         "w_o": ("o", "out", "output", "proj_out")}


#: Values of the contract's plain attributes in the probe model (every size distinct), which tell apart the several
#: int attributes a module holds (``hidden_size``, ``num_heads``, ``head_dim``).
VALUES = {"d_model": PROBE["d_model"], "h": PROBE["h"], "d_k": PROBE["d_model"] // PROBE["h"],
          "seq_len": PROBE["src_seq_len"], "vocab_size": PROBE["src_vocab_size"]}
#: Kinds of attribute the oracles and tests never need in order to run: a finding about one is reported (and fails
#: the API diagnosis test) but stops no other test.
NON_BLOCKING_KINDS = ("int", "float", "Dropout", "weights")


def _pick(contract: str, attr: str, kind: str, pool: list[str], owner: nn.Module) -> str | None:
    """The one candidate of the right kind; else the one of the right shape, value, initial value or name token.
    A candidate of the wrong weight shape (a fused ``qkv`` for ``w_q``) is never picked."""
    shape = SHAPES.get((contract, attr))
    if shape:
        pool = [n for n in pool if tuple(getattr(getattr(owner, n), "weight", torch.empty(0)).shape) == shape]
    if len(pool) == 1:
        return pool[0]
    if kind == "int" and attr in VALUES:
        hits = [n for n in pool if getattr(owner, n) == VALUES[attr]]
        if len(hits) == 1:
            return hits[0]
    if kind == "vector":
        return _pick_vector(attr, pool, owner)
    hint = HINTS.get(attr)
    if hint:
        hits = [n for n in pool if set(re.split(r"[_\d]+", n.lower())) & set(hint)
                or (len(n) <= 3 and n.lower().endswith(hint[0]))]
        if len(hits) == 1:
            return hits[0]
    return _closest(attr, pool, cutoff=0.5)


def _resolve(root: nn.Module, path: str) -> nn.Module | None:
    node: Any = root
    for part in filter(None, path.replace("[", ".[").split(".")):
        try:
            node = node[int(part[1:-1])] if part.startswith("[") else getattr(node, part)
        except (AttributeError, IndexError, KeyError, TypeError):
            return None
    return node if isinstance(node, nn.Module) else None


def _attributes(model: nn.Module, adapted: ModuleType, impl_map: ImplMap, *, forwarded: bool = True
                ) -> tuple[list[Finding], dict]:
    """Findings and proposed entries for the contract's attributes on the built ``model``. An attribute only a forward
    sets (``attention_scores``) is not judged when the probe's forward raised (``forwarded`` false): its absence then
    says nothing about the API, and the tests name the broken forward under its own clause."""
    contract_types = {c: {t for t in (getattr(adapted, c, None), getattr(getattr(adapted, c, None), "__mro__",
                                                                          (None, None))[1]) if isinstance(t, type)}
                      for c in ATTRIBUTES}
    findings, proposed = [], {}
    for contract, path in PATHS.items():
        owner = _resolve(model, path)
        if owner is None:
            continue
        members = _members(owner)
        mapped = impl_map.attributes.get(contract, {})
        for attr, kind in ATTRIBUTES[contract].items():
            if kind == "weights" and not forwarded:
                continue
            if attr in mapped or (hasattr(owner, attr) and _kind_ok(getattr(owner, attr), kind, owner, attr,
                                                                    contract_types)):
                continue
            others = set(ATTRIBUTES[contract]) | set(mapped.values())
            pool = [n for n, v in members.items() if n not in others and _kind_ok(v, kind, owner, n, contract_types)]
            found = _pick(contract, attr, kind, pool, owner)
            what = {"vector": "1-D parameter", "buffer": "buffer", "method": "method", "int": "int attribute",
                    "float": "number attribute",
                    "weights": "4-D weights tensor"}.get(kind, f"`{kind}`")
            if found:
                proposed.setdefault(contract, {})[attr] = found
                alone = " the only one" if len(pool) == 1 else ""
                message = (f"`{contract}` has no `{attr}`; its {what}{alone} `{found}` looks like it "
                           f"(of {sorted(pool)})")
            elif hasattr(owner, attr):  # there, but of another kind: say so, not "no candidate among [.., attr, ..]"
                value = getattr(owner, attr)
                shown = f"a {type(value).__name__}" + (f" of shape {tuple(value.shape)}"
                                                        if isinstance(value, torch.Tensor) else "")
                how = {"buffer": " registered with `register_buffer`",
                       "weights": " (the attention weights [B, h, Lq, Lk], kept by every forward)"}.get(kind, "")
                message = f"`{contract}.{attr}` is {shown}; the contract's is a {what}{how}"
            else:
                message = f"`{contract}` has no `{attr}` ({what}), and no candidate among {sorted(members)}"
            # the kept weights are mha.static-attention's own text ("the block keeps the weights in ...")
            clause = "mha.static-attention" if kind == "weights" else "api.attributes"
            findings.append(Finding(clause, contract, attr, found, message, blocking=kind not in NON_BLOCKING_KINDS))
    return findings, proposed


def _forward(model: nn.Module, call_timeout: float | None) -> tuple[bool, Finding | None]:
    """One small eval forward, so attributes a forward sets (``attention_scores``) exist: whether it ran, and the
    finding when it did not return or over-allocated (module.bounded, blocking); any other failure is left to the
    tests, which name it against its clause."""
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(0, PROBE["src_vocab_size"], (2, 5), generator=gen)
    tgt = torch.randint(0, PROBE["tgt_vocab_size"], (2, 4), generator=gen)
    call = "Transformer.encode/decode on the probe model (src [2, 5], tgt [2, 4], eval mode)"
    try:
        with torch.no_grad(), guard.watchdog().limit(call_timeout, call), guard.memory_cap():
            model.eval().decode(model.encode(src, None), None, tgt, None)
    except guard.ModelHung as exc:
        return False, Finding(guard.BOUNDED, "Transformer", "forward", None, str(exc))
    except Exception as exc:  # noqa: BLE001: the tests report a broken forward; the diagnosis only looks at names
        if guard.is_allocation_failure(exc):
            return False, Finding(guard.BOUNDED, "Transformer", "forward", None,
                                  f"{call} raised {type(exc).__name__} at {guard.where(exc)} (more than "
                                  f"{guard.MEMORY_HEADROOM >> 30} GiB at d_model={PROBE['d_model']}): {exc}")
        return False, None
    finally:
        model.train()
    return True, None


def _build(adapted: ModuleType, call_timeout: float | None) -> tuple[nn.Module | None, Finding | None]:
    """``build_transformer(*PROBE)`` under the watchdog and the memory cap: the model, or the finding that stops it
    (an exception: build.structure, with the exception and the line that raised it; a hang, an allocation failure
    or a model holding far more than the probe's sizes need: module.bounded)."""
    call = f"build_transformer{tuple(PROBE.values())}"
    try:
        with guard.watchdog().limit(call_timeout, call), guard.memory_cap():
            model = adapted.build_transformer(*PROBE.values())
    except guard.ModelHung as exc:
        return None, Finding(guard.BOUNDED, "build_transformer", "build_transformer", None, str(exc))
    except Exception as exc:  # noqa: BLE001: any failure of the user's code is a finding, never a crash
        clause = guard.BOUNDED if guard.is_allocation_failure(exc) else "build.structure"
        return None, Finding(clause, "build_transformer", "build_transformer", None,
                             f"`{call}` raised {type(exc).__name__} at {guard.where(exc)}: {exc}")
    held = guard.held_bytes(model) if isinstance(model, nn.Module) else 0
    if held > MAX_PROBE_BYTES:
        return None, Finding(guard.BOUNDED, "build_transformer", "build_transformer", None,
                             f"`{call}` holds {held / 2**20:.0f} MiB of parameters and buffers; at these sizes the "
                             f"contract's model holds a few kB (the limit is {MAX_PROBE_BYTES >> 20} MiB)")
    return model, None


#: Bytes of parameters and buffers the probe model may hold: its contract parameters are ~4 kB and its positional
#: tables ~1 kB; a table of 100k positions at d_model=8 is 3 MiB. Past this, the model allocates far beyond what
#: its config needs (module.bounded).
MAX_PROBE_BYTES = 256 << 20


def _affine_shapes(model: nn.Module, d_model: int) -> list[Finding]:
    norm = _resolve(model, PATHS["LayerNormalization"])
    if norm is None:
        return []
    out = []
    for name in ("alpha", "bias"):
        p = getattr(norm, name, None)
        if isinstance(p, torch.Tensor) and tuple(p.shape) != (d_model,):
            out.append(Finding("ln.per-feature-affine", "LayerNormalization", name, None,
                               f"`LayerNormalization.{name}` has shape {tuple(p.shape)}; the contract's is per "
                               f"feature, ({d_model},)", blocking=False))
    return out


def _check_attributes(module: ModuleType, user_map: ImplMap, effective: ImplMap) -> None:
    """``MapError`` for an attribute of ``user_map`` that points nowhere (``ImplMap.check_attributes``), on a probe
    model built through the classes and arguments only: with no attribute renamed, a name resolves only if it is
    yours."""
    if not user_map.attributes:
        return
    with torch.random.fork_rng(devices=[]):  # the global RNG as if this probe were never built
        try:
            plain = adapt(module, ImplMap(effective.classes, effective.arguments), register=False)
            model = plain.build_transformer(*PROBE.values())
        except Exception:  # noqa: BLE001: it built through the whole map; without the renames it cannot be checked
            return
        forwarded, _ = _forward(model, guard.CALL_TIMEOUT)
    user_map.check_attributes(model, forwarded=forwarded, module=module)


# ------------------------------------------------------------------------------------------------ entry point
def diagnose(module: ModuleType, user_map: ImplMap | None = None, *, impl: str | None = None,
             call_timeout: float | None = guard.CALL_TIMEOUT) -> Diagnosis:
    """Names, then signatures, then (on a small built model) attributes and parameter shapes, each round with the
    map so far, so a renamed class's renamed attribute is still found. ``MapError`` when a name of ``user_map``
    points nowhere: a class or argument in ``module``, an attribute on the built model."""
    user_map = user_map or ImplMap()
    diag = Diagnosis(impl or module.__name__, user=user_map)
    name_findings, classes = _names(module, user_map)
    diag.findings += name_findings
    proposed = ImplMap(classes=classes)
    effective = user_map.merged(proposed)
    user_map.check_module(module, effective.classes)
    sig_findings, arguments = _signatures(module, effective)
    diag.findings += sig_findings
    proposed = ImplMap(classes=classes, arguments=arguments)
    effective = user_map.merged(proposed)
    attributes: dict[str, dict[str, str]] = {}
    attr_findings: dict[tuple[str, str], Finding] = {}  # each attribute's first finding, over the rounds
    model = None
    for _ in range(4):  # attributes found on one round can open the path to the next (e.g. a renamed `layers`)
        adapted = adapt(module, effective)
        model, stop = _build(adapted, call_timeout)
        if stop is not None:
            diag.findings.append(stop)
            break
        forwarded, hung = _forward(model, call_timeout)
        if hung is not None:
            diag.findings.append(hung)
            break
        found, new = _attributes(model, adapted, effective, forwarded=forwarded)
        for f in found:
            attr_findings.setdefault((f.where, f.contract), f)
        if not new:
            break
        for where, entries in new.items():
            attributes.setdefault(where, {}).update(entries)
        proposed = ImplMap(classes=classes, arguments=arguments, attributes=attributes)
        effective = user_map.merged(proposed)
    diag.findings += attr_findings.values()
    if model is not None:
        _check_attributes(module, user_map, effective)
        diag.findings += _affine_shapes(model, PROBE["d_model"])
    diag.proposed, diag.effective = proposed, effective
    return diag


def reach(module: ModuleType, user_map: ImplMap | None = None, *, impl: str | None = None,
          call_timeout: float | None = guard.CALL_TIMEOUT) -> tuple[ModuleType, Diagnosis]:
    """Diagnose ``module`` and return the module the kit should test: ``module`` itself when its API is the
    contract's, else ``module`` seen through the user's map plus the diagnosis's proposals (``adapter.adapt``)."""
    diag = diagnose(module, user_map, impl=impl, call_timeout=call_timeout)
    reordered = any(f.contract == "(order)" for f in diag.findings)
    return (adapt(module, diag.effective) if diag.effective or reordered else module), diag
