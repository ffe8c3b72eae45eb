"""Diagnose an implementation's API against the contract before any numerical check, and propose a map.

Every deviation is a :class:`Finding` against its clause (``api.names``, ``api.signatures``, ``api.attributes``,
``build.structure``, ``ln.per-feature-affine``) with the closest match found: a class one letter off
(``InputEmbedding`` for ``InputEmbeddings``), a constructor parameter under another name, the one ``nn.Linear``
child of a ``ProjectionLayer`` called ``project``. Where the match is unambiguous it goes into the proposed
:class:`~reference.kit.adapter.ImplMap`, which the kit can use (and print, for the user to save and edit).

Structural differences (issue 33) are proposed in the map's structural forms, each checked on the probe model where
it can be: the Annotated Transformer's ``linears`` (``w_q = "linears.0"``), a fused ``qkv`` (``w_q = "qkv[0:d]"``),
a module-level ``attention`` function, embeddings in a ``Sequential`` (``src_pos = "src_embed.1"``), a ``generator``
for ``project``, ``Encoder(layer, N)`` (``layers = {clone = "layer", count = "N"}``), a builder without sequence
lengths, masks without the head dimension (``masks = "no-head-dim"``). The adapter applies them all.

Other walkthroughs' names are told by what they say, not by a list of files: argument kinds and roles
(``ARGUMENT_KINDS``, ``ARGUMENT_ROLES``: nanoGPT's ``n_embd``/``n_layer``/``n_head``/``block_size``, gordicaleksa's
``model_dimension``/``number_of_heads``; a bool default is a flag), the registry's class synonyms, and on the probe
model types, shapes, values, the children of containers (``net.0``, ``transformer.enc``) and how the probe's forward
calls each attention (the cross-attention gets the source's keys).
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import re
from types import ModuleType
from typing import Any

import torch
from torch import nn

from reference.kit import guard
from reference.kit.adapter import ImplMap, adapt, fused_rows
from reference.kit.findings import Diagnosis, Finding
from reference.kit.components import BY_CONTRACT, COMPONENTS
from reference.kit.components import ATTRIBUTES, REQUIRED_NAMES, SIGNATURES, contract_class
from reference.oracles import torch_ref

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
def _parameters(obj: Any) -> dict[str, inspect.Parameter]:
    """The positional parameters of a class's constructor or of a function, by name, in order."""
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"}


def _positional(obj: Any) -> list[str]:
    return list(_parameters(obj))


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
#: width, ``num_heads`` a count before ``head_dim`` is a width, and ``width_mult`` a factor before ``width`` makes it
#: a width. A whole name may carry a side prefix (``src_block_size`` is a ``block_size``). A proposed map never pairs
#: a contract argument with one of yours of another kind (``features``, a width, with ``N``, a count).
#: The whole names are other walkthroughs' spellings: nanoGPT's ``n_embd``/``ndim``/``block_size``, torch's
#: ``normalized_shape``/``num_embeddings``, gordicaleksa's ``model_dimension``, Hugging Face's ``n_positions``.
ARGUMENT_KINDS = (
    ("vocabulary size", {"ntoken", "ntokens", "num_embeddings"}, {"vocab", "vocabulary"}),
    ("sequence length", {"block_size", "n_positions", "n_ctx"}, {"seq", "len", "length", "positions", "context"}),
    ("epsilon", set(), {"eps", "epsilon"}),
    ("rate", {"p"}, {"dropout", "drop", "pdrop", "rate", "prob"}),
    ("count", {"n", "h", "layers", "depth", "heads", "nhead", "nheads", "nlayers", "nlayer"}, set()),
    ("factor", set(), {"mult", "multiplier", "ratio", "factor", "expansion"}),
    ("width", {"d_model", "d_ff", "dmodel", "dff", "d_k", "d_embed", "n_embd", "emb_size", "ndim", "normalized_shape"},
     {"dim", "dimension", "hidden", "size", "width", "features", "units", "channels", "inner"}),
)
#: ``num_layers``, ``n_heads``, ``number_of_blocks``: a count word after a count prefix.
_COUNT_WORDS = ({"n", "num", "number", "nb"}, {"layers", "layer", "heads", "head", "blocks", "block"})
#: Words that say which side of the model a name belongs to (``src_vocab``, ``trg_vocab_size``, ``tgt_pos``).
SIDES = {"src": {"src", "source", "enc", "encoder", "input"}, "tgt": {"tgt", "trg", "target", "dec", "decoder",
                                                                   "output"}}
#: Words that say what an argument is for, where several of one kind compete (``N`` and ``h`` are both counts:
#: ``n_layer``/``number_of_layers`` is the one, ``n_head``/``number_of_heads`` the other; ``d_model`` and ``d_ff``
#: both widths: ``model_dimension`` is the one; ``pointwise_net`` is the feed-forward block, ``enc_dec_attn`` the
#: cross-attention).
ARGUMENT_ROLES = {
    "d_model": {"model", "dmodel", "embd", "embed", "emb", "ndim"},
    "d_ff": {"ff", "ffn", "dff", "inner", "intermediate"},
    "N": {"layer", "layers", "nlayer", "nlayers", "depth", "block", "blocks", "stack"},
    "h": {"head", "heads", "nhead", "nheads"},
    "feed_forward_block": {"ff", "ffn", "feedforward", "feed", "mlp", "pointwise", "positionwise", "fc"},
    "cross_attention_block": {"cross", "src", "source", "enc", "encdec", "memory", "context"},
    "self_attention_block": {"self", "masked", "causal"},
}


def _words(name: str) -> set[str]:
    return {w for w in re.split(r"[_\d]+", name.lower()) if w}


def _side(name: str) -> str | None:
    """``src`` or ``tgt`` where ``name``'s words say so (``SIDES``), else None."""
    hits = [s for s, words in SIDES.items() if _words(name) & words]
    return hits[0] if len(hits) == 1 else None


def argument_kind(name: str) -> str | None:
    """The kind of a constructor argument by its name (``ARGUMENT_KINDS``), or None when its name does not say."""
    lowered = name.lower()
    words = [w for w in re.split(r"[_\d]+", lowered) if w]
    core = re.sub(r"^(src|tgt|trg|source|target)_", "", lowered)
    for kind, names, anywhere in ARGUMENT_KINDS:
        if lowered in names or core in names or set(words) & anywhere:
            return kind
        if kind == "count" and len(words) > 1 and words[0] in _COUNT_WORDS[0] and set(words[1:]) & _COUNT_WORDS[1]:
            return kind
    return None


def _your_kind(parameter: inspect.Parameter) -> str | None:
    """The kind of one of your parameters: by its name, or a flag where its default is a bool (``bias=True``,
    ``log_attention_weights=False``), which no size, rate or module is."""
    if isinstance(parameter.default, bool):
        return "flag"
    return argument_kind(parameter.name)


def _contract_kind(contract: str, argument: str) -> str | None:
    """The kind of a contract argument: a module (another contract class, a ``ModuleList``) by the registry, else by
    its name."""
    attribute = ATTRIBUTES.get(contract, {}).get(argument)
    if attribute == "ModuleList" or attribute in SIGNATURES:
        return "module"
    return argument_kind(argument)


def _kinds_of(theirs: list[str] | dict[str, inspect.Parameter]) -> dict[str, str | None]:
    if isinstance(theirs, dict):
        return {n: _your_kind(p) for n, p in theirs.items()}
    return {n: argument_kind(n) for n in theirs}


def _same_kind(contract: str, wanted: str, yours: str, kinds: dict[str, str | None] | None = None) -> bool:
    """Whether ``yours`` may receive the contract's ``wanted``: their kinds agree, or one of them is unknown (a flag
    receives nothing)."""
    a = _contract_kind(contract, wanted)
    b = kinds.get(yours) if kinds is not None and yours in kinds else argument_kind(yours)
    return b != "flag" and (a is None or b is None or a == b)


def _match_arguments(contract: str, wanted: tuple[str, ...], theirs: list[str], missing: list[str],
                     spare: list[str], params: dict[str, inspect.Parameter] | None = None
                     ) -> tuple[dict[str, str | bool], dict[str, str]]:
    """Pair the contract's untaken arguments with yours: by name, then by abbreviation, then by the words that say
    what it is for (``ARGUMENT_ROLES``), then the one of yours of its kind (and side), then by position, then the
    last one left, never across kinds (``argument_kind``; a flag takes nothing); a contract argument with nothing of
    yours left to receive it gets ``False`` (the kit leaves it out): none left, or only optional ones of another
    kind."""
    assigned: dict[str, str | bool] = {}
    how: dict[str, str] = {}
    pending = list(missing)
    kinds = _kinds_of(params if params is not None else theirs)

    def take(w: str, found: str, reason: str) -> None:
        assigned[w], how[w] = found, reason
        spare.remove(found)
        pending.remove(w)

    def fits(w: str) -> list[str]:
        return [c for c in spare if _same_kind(contract, w, c, kinds)]

    for w in list(pending):
        found = _closest(w, fits(w), cutoff=0.5)
        if found:
            take(w, found, "closest match")
    for w in list(pending):
        hits = [c for c in fits(w) if _abbreviates(c, w)]
        if len(hits) == 1:
            take(w, hits[0], "its abbreviation")
    for w in list(pending):
        role = ARGUMENT_ROLES.get(w, set())
        hits = [c for c in fits(w) if (_words(c) | {c.lower().replace("_", "")}) & role]
        if len(hits) == 1:
            take(w, hits[0], "its name says it")
    for w in list(pending):
        kind = _contract_kind(contract, w)
        if kind in (None, "module"):
            continue
        rivals = [o for o in pending if _contract_kind(contract, o) == kind and _side(o) == _side(w)]
        hits = [c for c in spare if kinds.get(c) == kind and _side(c) in (_side(w), None)]
        if len(rivals) == 1 and len(hits) == 1:
            take(w, hits[0], f"the one {kind} of yours left" + (f" on the {_side(w)} side" if _side(w) else ""))
    if len(pending) == len(spare):
        for w in list(pending):
            position = wanted.index(w)
            if position < len(theirs) and theirs[position] in fits(w):
                take(w, theirs[position], "yours at the same place")
    if len(pending) == 1 and len(spare) == 1 and fits(pending[0]):
        take(pending[0], spare[0], "the one argument of yours left")
    optional = params is not None and all(params[c].default is not inspect.Parameter.empty for c in spare)
    for w in list(pending):
        if not spare or (optional and not fits(w)):
            assigned[w] = False
    return assigned, how


def _a(kind: str | None) -> str:
    return f"{'an' if str(kind)[:1] in 'aeiou' else 'a'} {kind}"


def _unmatched(contract: str, w: str, theirs: list[str], spare: list[str],
               kinds: dict[str, str | None] | None = None) -> str:
    """The finding's message for a contract argument left unmatched: what of yours is left, and why not it."""
    kinds = kinds if kinds is not None else _kinds_of(theirs)
    other = [c for c in spare if not _same_kind(contract, w, c, kinds)]
    head = f"`{contract}{tuple(theirs)}` takes no argument for the contract's `{w}`"
    if other:
        shown = ", ".join(f"`{c}` ({_a(kinds.get(c))})" for c in other)
        return (f"{head} ({_a(_contract_kind(contract, w))}); not mapped to {shown}: another kind (map it yourself "
                "if it is one)")
    return f"{head}; none of {spare} is close to it"


def _takes(value: Any) -> list[str]:
    """The parameters of yours an ``[arguments.X]`` value names: ``"p"`` and ``"p.1"`` (element 1 of the Sequential
    ``p`` takes) name ``p``; ``{clone = "layer", count = "N"}`` names both; ``false`` none."""
    if isinstance(value, dict):
        return [v for v in (value.get("clone"), value.get("count")) if isinstance(v, str)]
    if isinstance(value, str):
        return [re.split(r"[.\[]", value)[0]]
    return []


def _signatures(module: ModuleType, m: ImplMap) -> tuple[list[Finding], dict[str, dict[str, str]]]:
    """Findings (an argument order of its own is the non-blocking ``(order)`` finding) and proposed entries."""
    findings, proposed = [], {}
    for contract, wanted in SIGNATURES.items():
        obj = getattr(module, m.classes.get(contract, contract), None)
        if obj is None:
            continue
        params = _parameters(obj)
        theirs = list(params)
        given = m.arguments.get(contract, {})
        mapped = [given.get(w, w) for w in wanted]
        missing = [w for w, y in zip(wanted, mapped) if y is not False and not set(_takes(y)) <= set(theirs)]
        spare = [t for t in theirs if t not in {n for y in mapped for n in _takes(y)}]
        assigned, how = _match_arguments(contract, wanted, theirs, missing, spare, params)
        for w in missing:
            found = assigned.get(w)
            if found:
                proposed.setdefault(contract, {})[w] = found
                message = (f"`{contract}{tuple(theirs)}`: the contract's argument `{w}` is not taken; {how[w]}: "
                           f"`{found}`")
            elif found is False:  # nothing of yours is left to receive it: the kit leaves it out
                proposed.setdefault(contract, {})[w] = False
                rest = ("" if not spare else "; yours left are optional and of another kind: " + ", ".join(
                    f"`{c}` ({_a(_your_kind(params[c]))})" for c in spare))
                message = (f"`{contract}{tuple(theirs)}` takes no argument for the contract's `{w}` (the kit leaves "
                           f"it out){rest}")
            else:
                message = _unmatched(contract, w, theirs, spare, _kinds_of(params))
            findings.append(Finding("api.signatures", contract, w, found or None, message))
        order = [(_takes(y) or [None])[0] for y in (given.get(w, proposed.get(contract, {}).get(w, w)) for w in wanted)]
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
    hits = [c for c in candidates if torch.all(_walk(owner, c).detach() == want)]
    return hits[0] if len(hits) == 1 else None


#: Weight shapes that tell same-kind children apart in the probe model (d_model 8, d_ff 16, target vocabulary 13).
SHAPES = {("FeedForwardBlock", "linear_1"): (16, 8), ("FeedForwardBlock", "linear_2"): (8, 16),
          ("ProjectionLayer", "proj"): (13, 8), **{("MultiHeadAttentionBlock", w): (8, 8)
                                                    for w in ("w_q", "w_k", "w_v", "w_o")}}
#: Where no child has the exact shape (a feed-forward whose width is not the probe's d_ff, ``4 * d_model``): the
#: one that reads d_model into another width is ``linear_1``, the one that writes d_model from another ``linear_2``
#: (weight shape [out, in]).
LOOSE_SHAPES = {("FeedForwardBlock", "linear_1"): lambda out, inp, d: inp == d != out,
                ("FeedForwardBlock", "linear_2"): lambda out, inp, d: out == d != inp}
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
#: A decoder block's two attentions, told apart by how the probe's decode called them: queries of the target's
#: length (4) and keys of the source's (5) make the cross-attention (``_forward``'s record of every call).
ATTENTION_ROLES = {"self_attention_block": False, "cross_attention_block": True}


def _weight_shape(owner: nn.Module, path: str) -> tuple[int, ...]:
    return tuple(getattr(_walk(owner, path), "weight", torch.empty(0)).shape)


def _pick(contract: str, attr: str, kind: str, pool: list[str], owner: nn.Module,
          calls: dict[int, list[tuple[int, int]]] | None = None) -> tuple[str | None, str]:
    """The one candidate of the right kind; else the one of the right shape, value, initial value, role in the
    probe's forward (``ATTENTION_ROLES``), side (``src_``/``tgt_``) or name token; and how it was told apart (empty
    where the message needs no more). A candidate of the wrong weight shape (a fused ``qkv`` for ``w_q``) is never
    picked."""
    shape = SHAPES.get((contract, attr))
    if shape:
        exact = [n for n in pool if _weight_shape(owner, n) == shape]
        loose = LOOSE_SHAPES.get((contract, attr))
        if not exact and loose:
            d = PROBE["d_model"]
            fit = [n for n in pool if len(_weight_shape(owner, n)) == 2 and loose(*_weight_shape(owner, n), d)]
            if len(fit) == 1:
                out, inp = _weight_shape(owner, fit[0])
                return fit[0], (f"its weight [{out}, {inp}] is the one that "
                                + (f"reads d_model ({d})" if attr == "linear_1" else f"writes d_model ({d})"))
        pool = exact
    if kind == "int" and attr in VALUES:  # every probe size is distinct: one that holds another's value is that one
        pool = [n for n in pool if _walk(owner, n) == VALUES[attr] or _walk(owner, n) not in VALUES.values()]
    if len(pool) == 1:
        return pool[0], ""
    if kind == "int" and attr in VALUES:
        hits = [n for n in pool if _walk(owner, n) == VALUES[attr]]
        if len(hits) == 1:
            return hits[0], ""
    if kind == "vector":
        return _pick_vector(attr, pool, owner), ""
    if attr in ATTENTION_ROLES and calls:
        def crossed(n: str) -> bool | None:
            seen = calls.get(id(_walk(owner, n)))
            return None if not seen else any(q != k for q, k in seen)
        hits = [n for n in pool if crossed(n) is ATTENTION_ROLES[attr]]
        if len(hits) == 1:
            return hits[0], ("the probe's decode called it with keys of the source's length and queries of the "
                             "target's" if ATTENTION_ROLES[attr] else
                             "the probe's decode called it with queries and keys of the target's length")
    if _side(attr):
        hits = [n for n in pool if _side(n.rsplit(".", 1)[-1]) == _side(attr)]
        if len(hits) == 1:
            return hits[0], ""
    hint = HINTS.get(attr)
    if hint:
        hits = [n for n in pool if set(re.split(r"[_\d]+", n.lower())) & set(hint)
                or (len(n) <= 3 and n.lower().endswith(hint[0]))]
        if len(hits) == 1:
            return hits[0], ""
    return _closest(attr, pool, cutoff=0.5), ""


def _walk(node: Any, path: str) -> Any:
    """``path`` below ``node`` in your names (attributes and indexes, dotted or bracketed: ``linears.0``,
    ``src_embed.1``, ``layers[0]``), or None where it leads nowhere."""
    for part in filter(None, path.replace("[", ".[").split(".")):
        try:
            if part.startswith("["):
                node = node[int(part[1:-1])]
            elif part.isdigit():
                node = node[int(part)]
            else:
                node = getattr(node, part)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            return None
    return node


def _structural(value: Any) -> bool:
    """Whether an ``[attributes.X]`` value is a path below the instance (``linears.0``) or a fused slice."""
    return isinstance(value, str) and bool(re.search(r"[.\[]", value))


def _rows(value: str, d: int) -> tuple[str, int, int] | None:
    """``qkv[d:2d]`` -> ("qkv", d, 2d) (``adapter.fused_rows`` in rows, not blocks)."""
    rows = fused_rows(value)
    return None if rows is None else (rows[0], rows[1] * d, rows[2] * d)


def _resolve(root: nn.Module, path: str, impl_map: ImplMap | None = None) -> nn.Module | None:
    """The module at the contract's ``path`` (``PATHS``); with ``impl_map``, a step the map sends down a path of
    yours (``src_embed = "src_embed.0"``) follows it, whatever the adapter makes of the contract's name."""
    node: Any = root
    for part in filter(None, path.replace("[", ".[").split(".")):
        step = None
        if impl_map is not None and not part.startswith("["):
            value = impl_map.attributes.get(contract_class(node), {}).get(part)
            if _structural(value) and fused_rows(value) is None:
                step = _walk(node, value)
        node = step if step is not None else _walk(node, part)
        if node is None:
            return None
    return node if isinstance(node, nn.Module) else None


#: Containers are never a contract class: a path that ends on one (your ``src_embed`` is a Sequential of the
#: contract's ``src_embed`` and ``src_pos``) is judged once the map leads inside it.
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _attributes(model: nn.Module, adapted: ModuleType, impl_map: ImplMap, *, forwarded: bool = True,
                module: ModuleType | None = None, call_timeout: float | None = guard.CALL_TIMEOUT,
                calls: dict[int, list[tuple[int, int]]] | None = None) -> tuple[list[Finding], dict]:
    """Findings and proposed entries for the contract's attributes on the built ``model``. An attribute only a forward
    sets (``attention_scores``) is not judged when the probe's forward raised (``forwarded`` false): its absence then
    says nothing about the API, and the tests name the broken forward under its own clause. The structural forms
    (``_structure``: a ModuleList of projections, a fused one, a Sequential of embedding and positions, a module-level
    attention function of ``module``, a submodule for a method) come before a match by kind and name; where the
    instance holds no candidate itself, the children of its containers are candidates (``net.0`` of a Sequential,
    ``transformer.enc`` of a ModuleDict); a Transformer's method candidate must answer the contract's call on the
    probe (``_answers``). ``calls``: the probe forward's record (``_forward``)."""
    contract_types = {c: {t for t in (getattr(adapted, c, None), getattr(getattr(adapted, c, None), "__mro__",
                                                                          (None, None))[1]) if isinstance(t, type)}
                      for c in ATTRIBUTES}
    findings, proposed = [], {}
    for contract, path in PATHS.items():
        owner = _resolve(model, path, impl_map)
        if owner is None or isinstance(owner, CONTAINERS):
            continue
        members = _members(owner)
        mapped = impl_map.attributes.get(contract, {})
        missing = [attr for attr, kind in ATTRIBUTES[contract].items()
                   if not (kind == "weights" and not forwarded) and attr not in mapped
                   and not (hasattr(owner, attr) and _kind_ok(getattr(owner, attr), kind, owner, attr, contract_types))]
        structure, notes = _structure(contract, owner, members, missing, contract_types, module, call_timeout)
        claimed = {re.split(r"[.\[]", value)[0] for value, _ in structure.values()}
        for attr in missing:
            kind = ATTRIBUTES[contract][attr]
            blocking = kind not in NON_BLOCKING_KINDS
            if attr in structure:
                found, message = structure[attr]
                proposed.setdefault(contract, {})[attr] = found
                findings.append(Finding("api.attributes", contract, attr, found, message, blocking=blocking))
                continue
            others = set(ATTRIBUTES[contract]) | set(mapped.values()) | claimed
            pool = [n for n, v in members.items() if n not in others and _kind_ok(v, kind, owner, n, contract_types)]
            if contract == "Transformer" and kind == "method" and attr in ANSWERS:
                pool = [n for n in pool if _answers(owner, n, attr, call_timeout)]
            if not pool and kind not in ("int", "float", "vector", "buffer", "method", "weights"):
                inner = _contained(members, others)
                pool = [n for n, v in inner.items() if _kind_ok(v, kind, owner, n.rsplit(".", 1)[-1], contract_types)]
            found, reason = _pick(contract, attr, kind, pool, owner, calls)
            what = {"vector": "1-D parameter", "buffer": "buffer", "method": "method", "int": "int attribute",
                    "float": "number attribute",
                    "weights": "4-D weights tensor"}.get(kind, f"`{kind}`")
            message = None
            if not found and contract == "Transformer" and attr == "project":  # a submodule in its place
                found, message = _project(owner, mapped, proposed.get(contract, {}))
            if not found and kind == "weights" and not pool:
                found, message = _unset_weights(owner, attr, members, others)
            if message:
                pass
            elif found:
                alone = " the only one" if len(pool) == 1 else ""
                message = (f"`{contract}` has no `{attr}`; its {what}{alone} `{found}` looks like it "
                           f"(of {sorted(pool)})" + (f": {reason}" if reason else ""))
            elif hasattr(owner, attr):  # there, but of another kind: say so, not "no candidate among [.., attr, ..]"
                value = getattr(owner, attr)
                shown = f"a {type(value).__name__}" + (f" of shape {tuple(value.shape)}"
                                                        if isinstance(value, torch.Tensor) else "")
                how = {"buffer": " registered with `register_buffer`",
                       "weights": " (the attention weights [B, h, Lq, Lk], kept by every forward)"}.get(kind, "")
                message = f"`{contract}.{attr}` is {shown}; the contract's is a {what}{how}"
            else:
                message = f"`{contract}` has no `{attr}` ({what}), and no candidate among {sorted(members)}"
            if not found and attr in notes:
                message += f"; {notes[attr]}"
            if found:
                proposed.setdefault(contract, {})[attr] = found
            # the kept weights are mha.static-attention's own text ("the block keeps the weights in ...")
            clause = "mha.static-attention" if kind == "weights" else "api.attributes"
            findings.append(Finding(clause, contract, attr, found, message, blocking=blocking))
    return findings, proposed


def _contained(members: dict[str, Any], others: set[str]) -> dict[str, nn.Module]:
    """The children of the instance's containers (``Sequential``, ``ModuleList``, ``ModuleDict``) by their paths
    below it: ``net.0``, ``transformer.enc``."""
    out: dict[str, nn.Module] = {}
    for name, value in members.items():
        if isinstance(value, CONTAINERS) and name not in others:
            out.update({f"{name}.{key}": child for key, child in value.named_children()})
    return out


#: The contract's call of each Transformer method on the probe (src [2, 5], tgt [2, 4]) and the shape it returns.
ANSWERS = {"encode": (lambda d: (torch.zeros(2, 5, dtype=torch.long), None), (2, 5, PROBE["d_model"])),
           "decode": (lambda d: (torch.zeros(2, 5, d), None, torch.zeros(2, 4, dtype=torch.long), None),
                      (2, 4, PROBE["d_model"])),
           "project": (lambda d: (torch.zeros(2, 4, d),), (2, 4, PROBE["tgt_vocab_size"]))}


def _answers(owner: nn.Module, name: str, attr: str, call_timeout: float | None) -> bool:
    """Whether your method ``name`` takes the contract's call of ``attr`` and returns the contract's shape on the
    probe (``init_params`` is not ``project``)."""
    fn = getattr(owner, name, None)
    make, shape = ANSWERS[attr]
    args = make(PROBE["d_model"])
    try:
        inspect.signature(fn).bind(*args)
    except (TypeError, ValueError):
        return False
    modes = [(m, m.training) for m in owner.modules()]
    try:
        owner.eval()
        return _failed(_call(fn, args, call_timeout, f"{type(owner).__name__}.{name} on the probe"), shape) is None
    finally:
        for m, mode in modes:
            m.training = mode


#: Words of an attribute's name that say it holds the attention weights (``attention_weights``, ``attn_probs``).
WEIGHT_WORDS = {"weights", "scores", "probs", "attn", "att", "attention"}


def _unset_weights(owner: nn.Module, attr: str, members: dict[str, Any], others: set[str]
                   ) -> tuple[str | None, str | None]:
    """No 4-D tensor after the probe's forward: the one attribute left ``None`` whose name says it holds the
    attention weights (a block that keeps them only under a flag), with a message that says the forward did not set
    it."""
    hits = [n for n, v in members.items() if v is None and n not in others and _words(n) & WEIGHT_WORDS]
    if len(hits) != 1:
        return None, None
    return hits[0], (f"`{type(owner).__name__}` has no `{attr}`; its `{hits[0]}` is named for the attention "
                     "weights but is None after the probe's forward (the forward did not keep them there)")


# ------------------------------------------------------------------------------------------------ structure
#: The attention projections in the order the Annotated Transformer's ``linears`` and a fused ``qkv`` hold them.
PROJECTIONS = ("w_q", "w_k", "w_v", "w_o")
ROLES = {"w_q": "query", "w_k": "key", "w_v": "value", "w_o": "output"}


def _is_linear(m: Any, out_features: int, in_features: int) -> bool:
    return isinstance(m, nn.Linear) and (m.out_features, m.in_features) == (out_features, in_features)


def _hinted(name: str, attr: str) -> bool:
    """Whether ``name`` says ``attr`` by a token (``q_proj`` for ``w_q``, ``out`` for ``w_o``)."""
    hint = HINTS[attr]
    return bool(set(re.split(r"[_\d]+", name.lower())) & set(hint)) or (len(name) <= 3
                                                                         and name.lower().endswith(hint[0]))


def _call(fn: Any, args: tuple, call_timeout: float | None, what: str) -> Any:
    """``fn(*args)`` in eval mode without grad, under the watchdog and the memory cap: its result, or the exception
    it raised (a hang too); training modes are put back."""
    modes = [(m, m.training) for m in fn.modules()] if isinstance(fn, nn.Module) else []
    try:
        with torch.no_grad(), guard.watchdog().limit(call_timeout, what), guard.memory_cap():
            for m, _ in modes:
                m.training = False
            return fn(*args)
    except (Exception, guard.ModelHung) as exc:  # noqa: BLE001: the user's code; the caller says what it means
        return exc
    finally:
        for m, mode in modes:
            m.training = mode


def _failed(result: Any, shape: tuple[int, ...]) -> str | None:
    """What went wrong with a call that should return a tensor of ``shape`` (None: nothing)."""
    if isinstance(result, BaseException):
        text = str(result).strip().splitlines()[0][:200] if str(result).strip() else ""
        return f"raises {type(result).__name__}" + (f": {text}" if text else "")
    if not isinstance(result, torch.Tensor):
        return f"returns a {type(result).__name__}, not a tensor"
    if tuple(result.shape) != shape:
        return f"returns shape {tuple(result.shape)}, not {shape}"
    return None


def _structure(contract: str, owner: nn.Module, members: dict[str, Any], missing: list[str],
               contract_types: dict[str, set[type]], module: ModuleType | None, call_timeout: float | None
               ) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """Structural proposals for ``owner``'s ``missing`` attributes (attribute -> (your path, the finding's message))
    and notes on those it looked for in vain (attribute -> why not)."""
    if contract == "MultiHeadAttentionBlock":
        found = _projections(owner, members, missing, call_timeout)
        notes = {}
        methods = [n for n, v in members.items() if callable(v) and not isinstance(v, nn.Module)]
        if ("attention" in missing and module is not None
                and not any(re.search(r"att|sdpa", n.lower()) for n in methods)):
            name, message = _attention_function(module, type(owner).__name__, call_timeout)
            if name:
                found["attention"] = (name, message)
            elif message:
                notes["attention"] = message
        return found, notes
    if contract == "Transformer":
        return _embeddings(owner, members, missing, contract_types)
    return {}, {}


def _projections(owner: nn.Module, members: dict[str, Any], missing: list[str], call_timeout: float | None
                 ) -> dict[str, tuple[str, str]]:
    """``w_q``..``w_o`` held structurally: a ModuleList of four ``nn.Linear(d, d)`` (``linears.0``..``linears.3``,
    q, k, v, o), of three plus one ``nn.Linear(d, d)`` of its own (the output), a fused ``nn.Linear(d, 3d)``
    (``qkv[0:d]``, ``qkv[d:2d]``, ``qkv[2d:3d]``) or ``nn.Linear(d, 2d)`` (k, v) beside its own q and output. The
    order is checked against the contract's formula on the probe's forward (``_ordered``)."""
    d = PROBE["d_model"]
    if not set(PROJECTIONS) & set(missing):
        return {}
    yours = type(owner).__name__
    lists = [n for n, v in members.items() if isinstance(v, (nn.ModuleList, nn.Sequential)) and len(v) in (3, 4)
             and all(_is_linear(m, d, d) for m in v)]
    fused = {k: [n for n, v in members.items() if _is_linear(v, k * d, d)] for k in (3, 2)}
    bound = ("0", "d", "2d", "3d")
    if len(lists) == 1:
        name, count = lists[0], len(members[lists[0]])
        structural = list(PROJECTIONS[:count])
        assign = {r: f"{name}.{i}" for i, r in enumerate(structural)}
        container = f"{type(members[name]).__name__} `{name}` of {count} nn.Linear({d}, {d})"
        how = (f"its `{name}` is a {type(members[name]).__name__} of {count} nn.Linear({d}, {d})"
               + (" (the Annotated Transformer's `linears`)" if count == 4 else ""))
    elif len(fused[3]) == 1:
        name, structural = fused[3][0], ["w_q", "w_k", "w_v"]
        assign = {r: f"{name}[{bound[i]}:{bound[i + 1]}]" for i, r in enumerate(structural)}
        container = f"fused q/k/v nn.Linear({d}, {3 * d}) `{name}`"
        how = f"its `{name}` is one nn.Linear({d}, {3 * d}), a fused q/k/v projection (d = its in_features)"
    elif len(fused[2]) == 1:
        name, structural = fused[2][0], ["w_k", "w_v"]
        assign = {r: f"{name}[{bound[i]}:{bound[i + 1]}]" for i, r in enumerate(structural)}
        container = f"fused k/v nn.Linear({d}, {2 * d}) `{name}`"
        how = f"its `{name}` is one nn.Linear({d}, {2 * d}), a fused k/v projection (d = its in_features)"
    else:
        return {}
    # the rest: yours under the contract's name, or the nn.Linear(d, d) of yours left (by its name if several)
    for r in PROJECTIONS:
        if r not in assign and r not in missing:
            assign[r] = r
    left = [n for n, v in members.items() if _is_linear(v, d, d) and n not in assign.values()]
    todo = [r for r in PROJECTIONS if r not in assign]
    single: dict[str, str] = {}
    if len(todo) == 1 and len(left) == 1:
        single[todo[0]] = left[0]
    else:
        for r in todo:
            hits = [n for n in left if _hinted(n, r)]
            if len(hits) == 1:
                single[r] = hits[0]
        rest = [n for n in left if n not in single.values()]
        if len(todo) - len(single) == 1 and len(rest) == 1:
            single[next(r for r in todo if r not in single)] = rest[0]
    assign.update(single)
    usual = dict(assign)
    assign, check = _ordered(owner, assign, structural, call_timeout)
    if assign == usual:  # else the check names the order it found
        how += f",{' its rows' if len(lists) != 1 else ''} in the order {', '.join(r[2] for r in structural)}"
    out = {}
    for r in structural:
        if r in missing:
            out[r] = (assign[r], f"`{yours}` has no `{r}`; {how}: `{assign[r]}` is its {ROLES[r]} projection "
                                 f"({check})")
    for r, n in single.items():
        if r in missing:
            out[r] = (n, f"`{yours}` has no `{r}`; beside its {container}, its nn.Linear({d}, {d}) `{n}` is the "
                         f"{ROLES[r]} projection ({check})")
    return out


def _projection_weights(owner: nn.Module, assign: dict[str, str]) -> dict[str, torch.Tensor] | None:
    """The four projections' weights (and biases) keyed as the oracles take them, read through ``assign``."""
    d = PROBE["d_model"]
    weights = {}
    for r in PROJECTIONS:
        value = assign.get(r)
        rows = _rows(value, d) if value else None
        linear = _walk(owner, rows[0] if rows else value) if value else None
        if not isinstance(linear, nn.Linear):
            return None
        lo, hi = rows[1:] if rows else (0, linear.out_features)
        weights[f"{r}.weight"] = linear.weight.detach()[lo:hi]
        if linear.bias is not None:
            weights[f"{r}.bias"] = linear.bias.detach()[lo:hi]
    return weights


def _ordered(owner: nn.Module, assign: dict[str, str], structural: list[str], call_timeout: float | None
             ) -> tuple[dict[str, str], str]:
    """``assign`` checked on the probe: the block's forward (eval, no mask) against the contract's formula with the
    weights it names; when that differs, the one other order of the ``structural`` roles that matches, if any.
    Returns the assignment and what the check found (for the findings)."""
    missing = [r for r in PROJECTIONS if r not in assign]
    if missing:
        return assign, f"not checked against the contract's formula: no {', '.join(f'`{r}`' for r in missing)} found"
    d, h = PROBE["d_model"], PROBE["h"]
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, n, d, generator=gen) for n in (5, 6, 6))
    got = _call(owner, (q, k, v, None), call_timeout, f"{type(owner).__name__}.forward on the probe")
    got = got[0] if isinstance(got, tuple) and got else got
    problem = _failed(got, (3, 5, d))
    if problem:
        return assign, f"not checked against the contract's formula: the forward {problem}"

    def error(trial: dict[str, str]) -> float:
        weights = _projection_weights(owner, trial)
        if weights is None:
            return float("inf")
        with torch.no_grad():
            want = torch_ref.multi_head_attention(q, k, v, None, weights, h)[0]
        return float((got - want).abs().max())

    first = error(assign)
    if first <= 1e-5:
        return assign, "checked: the probe's forward equals the contract's formula with these weights"
    places = [assign[r] for r in structural]
    orders = [dict(zip(structural, p)) for p in itertools.permutations(places)]
    hits = [{**assign, **o} for o in orders[1:] if error({**assign, **o}) <= 1e-5]
    if len(hits) == 1:
        order = ", ".join(ROLES[r][0] for r in sorted(structural, key=lambda r: places.index(hits[0][r])))
        return hits[0], (f"checked: the probe's forward equals the contract's formula with its parts in the order "
                         f"{order}, not the usual one")
    return assign, (f"not confirmed: with these weights the probe's forward differs from the contract's formula by "
                    f"{first:.2g}, and no other order of them matches (another layout, or a bug the tests name)")


#: Names a module-level attention function goes by (``attention``, ``scaled_dot_product_attention``, ``sdpa``).
ATTENTION_FUNCTION = re.compile(r"att(n|ention)|sdpa", re.IGNORECASE)


def _attention_function(module: ModuleType, yours: str, call_timeout: float | None) -> tuple[str | None, str]:
    """A function of ``module`` (defined there) named like attention, called as the contract's static
    ``attention(query, key, value, mask, dropout)`` on the probe: the one that returns (output, attention weights)
    of the contract's shapes, and the message; or None and why none (empty: no function named so)."""
    functions = {n: f for n, f in vars(module).items() if not n.startswith("_") and inspect.isfunction(f)
                 and getattr(f, "__module__", None) == module.__name__ and ATTENTION_FUNCTION.search(n)
                 and "mask" not in n.lower()}
    if not functions:
        return None, ""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(3, 2, n, 4, generator=gen) for n in (5, 6, 6))
    shapes = ((3, 2, 5, 4), (3, 2, 5, 6))
    works, why = [], {}
    for name, fn in functions.items():
        try:
            inspect.signature(fn).bind(q, k, v, None, None)
        except (TypeError, ValueError):
            why[name] = "takes another signature"
            continue
        got = _call(fn, (q, k, v, None, None), call_timeout, f"{name}(query, key, value, None, None)")
        if isinstance(got, tuple) and len(got) == 2:
            problems = [p for p in (_failed(t, s) for t, s in zip(got, shapes)) if p]
            if not problems:
                works.append(name)
                continue
            why[name] = "its (output, weights) " + "; ".join(problems)
        else:
            why[name] = _failed(got, shapes[0]) or "returns one tensor, not (output, attention weights)"
    if len(works) > 1 and "attention" in works:
        works = ["attention"]
    if len(works) == 1:
        name = works[0]
        return name, (f"`{yours}` has no static `attention`; your module's function `{name}"
                      f"{inspect.signature(functions[name])}` takes the contract's call (query, key, value, mask, "
                      f"dropout) and returns (output, attention weights) of the contract's shapes on the probe "
                      f"({list(shapes[0])}, {list(shapes[1])})")
    if works:
        return None, (f"your module's functions {works} each take the contract's attention call: which one is it? "
                      "(map `attention` yourself)")
    return None, ("your module's " + "; ".join(f"function `{n}`{inspect.signature(functions[n])} {why[n]}"
                                               for n in functions)
                  + " when called as the contract's attention(query, key, value, mask=None, dropout=None) on "
                    f"[3, 2, 5, 4], [3, 2, 6, 4], [3, 2, 6, 4]: not mapped")


def _embeddings(owner: nn.Module, members: dict[str, Any], missing: list[str],
                contract_types: dict[str, set[type]]) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """A Transformer whose embeddings sit in a Sequential (the Annotated Transformer's ``src_embed =
    nn.Sequential(Embeddings, PositionalEncoding)``): ``src_embed = "src_embed.0"``, ``src_pos = "src_embed.1"``.
    The source's and the target's are told apart by their vocabulary (11 and 13 in the probe), else by name."""
    wanted = [a for a in ("src_embed", "src_pos", "tgt_embed", "tgt_pos") if a in missing]
    if not wanted:
        return {}, {}
    d = PROBE["d_model"]
    vocab = {PROBE["src_vocab_size"]: "src", PROBE["tgt_vocab_size"]: "tgt"}
    embed_types = tuple(contract_types.get("InputEmbeddings", ()))
    pos_types = tuple(contract_types.get("PositionalEncoding", ()))
    yours = type(owner).__name__
    found: dict[str, tuple[str, str]] = {}
    notes: dict[str, str] = {}
    for name, seq in members.items():
        if not isinstance(seq, nn.Sequential):
            continue
        side, parts = None, {}
        for i, child in enumerate(seq):
            tables = [m.num_embeddings for m in child.modules() if isinstance(m, nn.Embedding)]
            table = [b for b in child.buffers(recurse=False) if b.dim() >= 2 and b.shape[-1] == d]
            if "embed" not in parts and ((embed_types and isinstance(child, embed_types))
                                         or any(t in vocab for t in tables)):
                side = vocab.get(next((t for t in tables if t in vocab), None))
                parts["embed"] = (i, child)
            elif "pos" not in parts and ((pos_types and isinstance(child, pos_types)) or table
                                         or (tables and not any(t in vocab for t in tables))):
                parts["pos"] = (i, child)
        if "embed" not in parts:
            continue
        side = side or next((s for s, words in (("src", ("src", "source", "enc", "input")),
                                                ("tgt", ("tgt", "target", "dec", "output")))
                             if set(re.split(r"[_\d]+", name.lower())) & set(words)), None)
        if side is None:
            continue
        shown = f"nn.Sequential({', '.join(type(c).__name__ for c in seq)})"
        whose = {"src": "source", "tgt": "target"}[side]
        for part, (i, child) in parts.items():
            attr = f"{side}_{part}"
            if attr not in wanted:
                continue
            if isinstance(child, nn.Embedding):
                notes[attr] = (f"`{yours}.{name}` is {shown}; its element {i} is a bare nn.Embedding (no "
                               "InputEmbeddings class of yours, no sqrt(d_model) scaling): not mapped")
                continue
            what = (f"the embedding of the {whose} vocabulary" if part == "embed" else
                    f"the {whose} positional encoding")
            head = (f"`{yours}.{name}` is {shown}: the contract's `{attr}` is" if name == attr else
                    f"`{yours}` has no `{attr}`; its `{name}` is {shown}, whose")
            found[attr] = (f"{name}.{i}", f"{head} element {i}, {what}: `{name}.{i}`")
    return found, notes


def _project(owner: nn.Module, mapped: dict[str, str], proposed: dict[str, str]
             ) -> tuple[str | None, str | None]:
    """No ``project`` method: the projection submodule (``generator``) called in its place."""
    target = mapped.get("projection_layer") or proposed.get("projection_layer") or "projection_layer"
    if not isinstance(target, str) or not isinstance(_walk(owner, target), nn.Module):
        return None, None
    return target, (f"`{type(owner).__name__}` has no method `project`; its submodule `{target}` (the contract's "
                    f"`projection_layer`) is called in its place, with the same arguments")


#: Constructor parameters that take the one layer an Encoder/Decoder deep-copies (``Encoder(layer, N)``).
LAYER_WORDS = {"layer", "block", "module", "sublayer"}


def _structural_signatures(module: ModuleType, m: ImplMap) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    """Constructor forms the kit builds differently, before the probe: ``Encoder(layer, N)`` / ``Decoder(layer, N)``
    (one layer, a count: ``layers = {clone = "layer", count = "N"}``; ``features = false`` without a width), and a
    builder that takes no sequence length (``src_seq_len = false``, ``tgt_seq_len = false``)."""
    findings, proposed = [], {}
    for contract in ("Encoder", "Decoder"):
        obj = getattr(module, m.classes.get(contract, contract), None)
        given = m.arguments.get(contract, {})
        if not isinstance(obj, type) or "layers" in given:
            continue
        theirs = _positional(obj)
        counts = [t for t in theirs if argument_kind(t) == "count" and t != "layers"]
        layers = [t for t in theirs if argument_kind(t) is None and set(re.split(r"[_\d]+", t.lower())) & LAYER_WORDS]
        if "layers" in theirs or len(counts) != 1 or len(layers) != 1:
            continue
        layer, count = layers[0], counts[0]
        call = f"`{contract}{tuple(theirs)}`"
        entry: dict[str, Any] = {"layers": {"clone": layer, "count": count}}
        findings.append(Finding("api.signatures", contract, "layers", f"{layer} x {count}",
                                f"{call} takes one layer and a count for the contract's `layers` (a ModuleList): "
                                f"`layers = {{clone = \"{layer}\", count = \"{count}\"}}` (the kit passes "
                                f"`{layer}` = layers[0] and `{count}` = len(layers), then loads each layer's weights "
                                "into your copy of it)"))
        widths = [t for t in theirs if argument_kind(t) == "width"]
        if "features" not in given and "features" not in theirs and not widths:
            entry["features"] = False
            findings.append(Finding("api.signatures", contract, "features", None,
                                    f"{call} takes no width for the contract's `features` (your norm takes its width "
                                    f"from `{layer}`): the kit leaves it out"))
        elif "features" not in given and "features" not in theirs and len(widths) == 1:
            entry["features"] = widths[0]
            findings.append(Finding("api.signatures", contract, "features", widths[0],
                                    f"{call}: the contract's argument `features` is not taken; the one width beside "
                                    f"`{layer}` and `{count}`: `{widths[0]}`"))
        proposed[contract] = entry
    builder = getattr(module, m.classes.get("build_transformer", "build_transformer"), None)
    theirs = _positional(builder) if callable(builder) else []
    given = m.arguments.get("build_transformer", {})
    if theirs and not any(argument_kind(t) == "sequence length" for t in theirs):
        for w in ("src_seq_len", "tgt_seq_len"):
            if w not in theirs and w not in given:
                proposed.setdefault("build_transformer", {})[w] = False
                findings.append(Finding("api.signatures", "build_transformer", w, None,
                                        f"`{getattr(builder, '__name__', 'build_transformer')}{tuple(theirs)}` takes "
                                        f"no sequence length (none of its parameters is one): the kit leaves `{w}` "
                                        "out, and your positional tables keep their own length"))
    return findings, proposed


def _structural_arguments(module: ModuleType, m: ImplMap) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    """Constructor arguments the probe model tells: a contract argument held by your instance under the name of one
    of your parameters (``projection_layer`` -> ``generator``), or as element i of the Sequential your parameter
    takes (``src_embed = "src_embed.0"``, ``src_pos = "src_embed.1"``)."""
    findings, proposed = [], {}
    for contract, wanted in SIGNATURES.items():
        obj = getattr(module, m.classes.get(contract, contract), None)
        attributes = m.attributes.get(contract, {})
        if not isinstance(obj, type) or not attributes:
            continue
        theirs = _positional(obj)
        given = m.arguments.get(contract, {})
        taken = {n for y in given.values() for n in _takes(y)}
        call = f"`{contract}{tuple(theirs)}`"
        for w in wanted:
            value = attributes.get(w)
            if not isinstance(value, str) or not isinstance(given.get(w, ""), str) or _structural(given.get(w)):
                continue
            element = re.fullmatch(r"(\w+)\.(\d+)", value)
            if element and element[1] in theirs:
                message = (f"{call}: your `{element[1]}` takes an nn.Sequential (the probe model's `{element[1]}` is "
                           f"one) whose element {element[2]} is the contract's `{w}`: the kit builds the Sequential "
                           f"from the contract's parts and passes it as `{element[1]}`")
            elif not _structural(value) and value in theirs and w not in theirs and w not in given \
                    and value not in taken:
                message = (f"{call}: the contract's argument `{w}` is not taken; the probe model holds it as your "
                           f"`{value}`, which your constructor takes")
            else:
                continue
            proposed.setdefault(contract, {})[w] = value
            findings.append(Finding("api.signatures", contract, w, value, message))
    return findings, proposed


#: The mask the kit passes (the contract's, with its head dimension: [B, 1, 1, Lk]) and the one without it
#: ([B, 1, Lk]), on a probe where B (3) is not h (2), so a mask read with the other layout cannot broadcast silently.
MASK_PROBE = {"batch": 3, "len_q": 5, "len_k": 6, "kept": 4}
#: Source text that unsqueezes the head dimension itself (the Annotated Transformer's ``mask = mask.unsqueeze(1)``).
UNSQUEEZES = re.compile(r"mask\w*\s*\.\s*unsqueeze\(\s*1\s*\)|mask\w*\s*\[\s*:\s*,\s*None")


def _mask_outcomes(model: nn.Module, m: ImplMap, call_timeout: float | None
                   ) -> tuple[nn.Module, dict[str, str | None]] | None:
    """The attention block of ``model`` and, per layout ("head-dim": the contract's [B, 1, 1, Lk]; "no-head-dim":
    [B, 1, Lk]), None when a key-padding mask in that layout gives the block's output without those keys, else what
    went wrong; None when there is no block or its unmasked forward fails."""
    mha = _resolve(model, PATHS["MultiHeadAttentionBlock"], m)
    if mha is None:
        return None
    yours = type(mha).__name__
    B, Lq, Lk, kept = (MASK_PROBE[k] for k in ("batch", "len_q", "len_k", "kept"))
    d = PROBE["d_model"]
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(B, n, d, generator=gen) for n in (Lq, Lk, Lk))
    shape = (B, Lq, d)

    def run(*args: Any) -> Any:
        got = _call(mha, args, call_timeout, f"{yours}.forward on the mask probe")
        return got[0] if isinstance(got, tuple) and got and isinstance(got[0], torch.Tensor) else got

    reference = run(q, k[:, :kept], v[:, :kept], None)
    if _failed(reference, shape) or _failed(run(q, k, v, None), shape):
        return None
    keys = torch.ones(B, Lk, dtype=torch.int64)
    keys[:, kept:] = 0
    outcome = {}
    for layout, shape_of_mask in (("head-dim", (B, 1, 1, Lk)), ("no-head-dim", (B, 1, Lk))):
        got = run(q, k, v, keys.view(shape_of_mask).clone())  # a copy each: a forward may write into its mask
        problem = _failed(got, shape)
        if problem is None:
            err = float((got - reference).abs().max())
            problem = None if err <= 1e-5 else (f"runs, but its output differs from its output without those keys "
                                                f"by {err:.2g}")
        outcome[layout] = problem
    return mha, outcome


def _mask_layout(model: nn.Module, m: ImplMap, call_timeout: float | None, module: ModuleType | None
                 ) -> tuple[Finding | None, str | None]:
    """The mask layout the attention block takes, by probing it: a key-padding mask hiding the last keys, in the
    contract's layout [B, 1, 1, Lk] and without the head dimension [B, 1, Lk]; the layout whose output equals the
    block's output with those keys left out is yours. ("no-head-dim" and its finding) when only the one without the
    head dimension works; (None, None) when the contract's works, when neither does, or when the unmasked forward
    itself fails (the tests name each under its clause)."""
    probed = _mask_outcomes(model, m, call_timeout)
    if probed is None:
        return None, None
    mha, outcome = probed
    yours = type(mha).__name__
    B, Lk, kept = (MASK_PROBE[k] for k in ("batch", "len_k", "kept"))
    if outcome["head-dim"] is None:
        return None, None
    sources = []
    for obj in (*type(mha).__mro__, *(f for n, f in vars(module or ModuleType("_")).items()
                                      if inspect.isfunction(f) and ATTENTION_FUNCTION.search(n))):
        if obj in (nn.Module, object):
            continue
        try:
            sources.append(inspect.getsource(obj))
        except (OSError, TypeError):
            continue
    said = next((hit.group(0) for s in sources for hit in [UNSQUEEZES.search(s)] if hit), None)
    source = f"; its source has `{said}`" if said else ""
    contract_mask = f"the contract's key-padding mask [{B}, 1, 1, {Lk}] (hiding the last {Lk - kept} keys)"
    if outcome["no-head-dim"] is None:
        return Finding("api.signatures", "MultiHeadAttentionBlock", "(masks)", "no-head-dim",
                       f"`{yours}` takes masks without the head dimension (`masks = \"no-head-dim\"`): with "
                       f"{contract_mask} its forward {outcome['head-dim']}; with the same mask as [{B}, 1, {Lk}] its "
                       f"output equals its output without those keys (it unsqueezes the head dimension itself"
                       f"{source})"), "no-head-dim"
    # Neither layout works: not an API finding. The contract's layout fails, and the mask tests name how, under
    # their own clauses (a model that writes into an integer mask fails module.pure, one that crashes on a mask
    # fails mask.semantics); a map cannot fix it.
    return None, None


def _forward(model: nn.Module, call_timeout: float | None, calls: dict[int, list[tuple[int, int]]] | None = None
             ) -> tuple[bool, Finding | None]:
    """One small eval forward, so attributes a forward sets (``attention_scores``) exist: whether it ran, and the
    finding when it did not return or over-allocated (module.bounded, blocking); any other failure is left to the
    tests, which name it against its clause. With ``calls``, each submodule's calls are recorded there (by ``id``):
    the lengths of the first two [B, L, d] tensors it received, which tell a cross-attention (queries of the
    target's length 4, keys of the source's 5) from a self-attention."""
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(0, PROBE["src_vocab_size"], (2, 5), generator=gen)
    tgt = torch.randint(0, PROBE["tgt_vocab_size"], (2, 4), generator=gen)
    call = "Transformer.encode/decode on the probe model (src [2, 5], tgt [2, 4], eval mode)"

    def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
        seqs = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor) and t.dim() == 3
                and t.shape[-1] == PROBE["d_model"]]  # [B, L, d]: not a [B, 1, L] mask
        if len(seqs) >= 2:
            calls.setdefault(id(module), []).append((seqs[0].shape[1], seqs[1].shape[1]))

    hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in model.modules()] if calls is not None \
        else []
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
        for hook in hooks:
            hook.remove()
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
        model = _raw_probe(module, ImplMap(effective.classes, _plain(effective).arguments))
        if model is None:  # it built through the whole map; without the renames it cannot be checked
            return
        forwarded, _ = _forward(model, guard.CALL_TIMEOUT)
    user_map.check_attributes(model, forwarded=forwarded, module=module)


def _raw_probe(module: ModuleType, m: ImplMap) -> nn.Module | None:
    """``build_transformer(*PROBE)`` through ``m`` (a map the checks below build with: without the attribute
    renames, or without the mask conversion), or None when it does not build that way (it built through the whole
    map, so the check has nothing to tell)."""
    try:
        return adapt(module, m, register=False).build_transformer(*PROBE.values())
    except Exception:  # noqa: BLE001: see above
        return None


def _check_masks(module: ModuleType, user_map: ImplMap, effective: ImplMap, call_timeout: float | None) -> None:
    """``MapError`` for ``masks = "no-head-dim"`` on a model whose attention takes the contract's layout (a
    key-padding mask [B, 1, 1, Lk] does what it should, one without the head dimension does not), probed on a model
    built without the map's mask conversion."""
    if user_map.masks != "no-head-dim":
        return
    with torch.random.fork_rng(devices=[]):
        model = _raw_probe(module, _plain(effective))
        probed = None if model is None else _mask_outcomes(model, effective, call_timeout)
    if probed is not None and probed[1]["head-dim"] is None and probed[1]["no-head-dim"] is not None:
        user_map.fail(("masks",), f"your `{type(probed[0]).__name__}` takes the contract's masks, with the head "
                      f"dimension: a key-padding mask [{MASK_PROBE['batch']}, 1, 1, {MASK_PROBE['len_k']}] hides its "
                      f"keys, the same mask as [{MASK_PROBE['batch']}, 1, {MASK_PROBE['len_k']}] "
                      f"{probed[1]['no-head-dim']}; leave `masks` out")


def _plain(m: ImplMap) -> ImplMap:
    """``m`` without its structural arguments (``{clone = ...}``, ``"src_embed.0"``) and mask layout: the map the
    diagnosis builds its probe through. The probe is built by your own builder, which calls your constructors
    itself, so those arguments change nothing there; and the mask probe must see your modules' own layout."""
    return ImplMap(m.classes, {c: {k: v for k, v in e.items() if not isinstance(v, dict) and not _structural(v)}
                               for c, e in m.arguments.items()}, m.attributes)


def _replaced(findings: list[Finding], new: list[Finding]) -> list[Finding]:
    """``findings`` with those about the same clause, class and name as one of ``new`` replaced by it."""
    keys = {(f.clause, f.where, f.contract) for f in new}
    return [f for f in findings if (f.clause, f.where, f.contract) not in keys] + new


# ------------------------------------------------------------------------------------------------ entry point
def diagnose(module: ModuleType, user_map: ImplMap | None = None, *, impl: str | None = None,
             call_timeout: float | None = guard.CALL_TIMEOUT) -> Diagnosis:
    """Names, then signatures, then (on a small built model) attributes and parameter shapes, each round with the
    map so far, so a renamed class's renamed attribute is still found. ``MapError`` when a name of ``user_map``
    points nowhere: a class or argument in ``module``, an attribute on the built model."""
    user_map = user_map if user_map is not None else ImplMap()
    diag = Diagnosis(impl or module.__name__, user=user_map)
    name_findings, classes = _names(module, user_map)
    diag.findings += name_findings
    proposed = ImplMap(classes=classes)
    effective = user_map.merged(proposed)
    user_map.check_module(module, effective.classes)
    sig_findings, arguments = _signatures(module, effective)
    structural_findings, structural = _structural_signatures(module, effective)
    diag.findings += _replaced(sig_findings, structural_findings)
    for where, entries in structural.items():
        arguments.setdefault(where, {}).update(entries)
    proposed = ImplMap(classes=classes, arguments=arguments)
    effective = user_map.merged(proposed)
    attributes: dict[str, dict[str, str]] = {}
    attr_findings: dict[tuple[str, str], Finding] = {}  # each attribute's first finding, over the rounds
    model = None
    for _ in range(4):  # attributes found on one round can open the path to the next (e.g. a renamed `layers`)
        adapted = adapt(module, _plain(effective))
        model, stop = _build(adapted, call_timeout)
        if stop is not None:
            diag.findings.append(stop)
            break
        calls: dict[int, list[tuple[int, int]]] = {}
        forwarded, hung = _forward(model, call_timeout, calls)
        if hung is not None:
            diag.findings.append(hung)
            break
        found, new = _attributes(model, adapted, effective, forwarded=forwarded, module=module,
                                 call_timeout=call_timeout, calls=calls)
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
        argument_findings, entries = _structural_arguments(module, effective)
        diag.findings = _replaced(diag.findings, argument_findings)
        for where, more in entries.items():
            arguments.setdefault(where, {}).update(more)
        masks = "head-dim"
        if user_map.masks == "head-dim":
            finding, layout = _mask_layout(model, effective, call_timeout, module)
            diag.findings += [finding] if finding else []
            masks = layout or masks
        proposed = ImplMap(classes=classes, arguments=arguments, attributes=attributes, masks=masks)
        effective = user_map.merged(proposed)
        _check_attributes(module, user_map, effective)
        _check_masks(module, user_map, effective, call_timeout)
        diag.findings += _affine_shapes(model, PROBE["d_model"])
    else:
        effective = user_map.merged(proposed)
    diag.proposed, diag.effective = proposed, effective
    return diag


def reach(module: ModuleType, user_map: ImplMap | None = None, *, impl: str | None = None,
          call_timeout: float | None = guard.CALL_TIMEOUT) -> tuple[ModuleType, Diagnosis]:
    """Diagnose ``module`` and return the module the kit should test: ``module`` itself when its API is the
    contract's, else ``module`` seen through the user's map plus the diagnosis's proposals (``adapter.adapt``)."""
    diag = diagnose(module, user_map, impl=impl, call_timeout=call_timeout)
    reordered = any(f.contract == "(order)" for f in diag.findings)
    seen = diag.effective or reordered or diag.effective.masks != "head-dim" or diag.effective.variant
    return (adapt(module, diag.effective) if seen else module), diag
