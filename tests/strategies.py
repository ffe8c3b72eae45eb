"""Every Hypothesis strategy of the suite, composed from small pieces.

Dependent values are drawn, not filtered: draw ``h`` and ``d_k``, then ``d_model = h * d_k``.
Float inputs and random bool masks are drawn densely (``dense_arrays``, ``dense_bools``: a seed through a NumPy
generator, every element drawn, explicit bounds, no NaN/inf); token ids come from ``hypothesis.extra.numpy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reference.spec.contract import ModelConfig, per_head_masks

#: Input magnitudes: tiny, unit and large values, and a large common offset (cancellation in naive variance).
SCALES = ("tiny", "unit", "large", "offset")


@dataclass(frozen=True)
class AttentionConfig:
    """Sizes of one attention call: batch, heads, head width, query and key lengths."""

    B: int
    h: int
    d_k: int
    Lq: int
    Lk: int

    @property
    def d_model(self) -> int:
        return self.h * self.d_k


@st.composite
def heads_and_width(draw, *, max_d_model: int = 128, max_h: int = 8) -> tuple[int, int]:
    """(h, d_k) with h in 1..max_h (1 included) and h * d_k <= max_d_model."""
    h = draw(st.sampled_from([n for n in (1, 2, 3, 4, 8) if n <= max_h]))
    d_k = draw(st.integers(1, max(1, max_d_model // h)))
    return h, d_k


@st.composite
def attention_configs(draw, *, max_batch: int = 3, max_len: int = 12, max_d_model: int = 64,
                      self_attention: bool | None = None, min_len: int = 1) -> AttentionConfig:
    """An attention shape (lengths in ``min_len``..``max_len``); ``Lq != Lk`` (cross-attention) unless
    ``self_attention`` is True."""
    h, d_k = draw(heads_and_width(max_d_model=max_d_model))
    B = draw(st.integers(1, max_batch))
    Lq = draw(st.integers(min_len, max_len))
    if self_attention is None:
        self_attention = draw(st.booleans())
    Lk = Lq if self_attention else draw(st.integers(min_len, max_len))
    return AttentionConfig(B=B, h=h, d_k=d_k, Lq=Lq, Lk=Lk)


@st.composite
def model_configs(draw, *, max_d_model: int = 64, max_N: int = 3, max_len: int = 16,
                  max_vocab: int = 40) -> ModelConfig:
    """A small ``build_transformer`` configuration (dropout 0)."""
    h, d_k = draw(heads_and_width(max_d_model=max_d_model))
    return ModelConfig(
        src_vocab_size=draw(st.integers(2, max_vocab)), tgt_vocab_size=draw(st.integers(2, max_vocab)),
        src_seq_len=draw(st.integers(1, max_len)), tgt_seq_len=draw(st.integers(1, max_len)),
        d_model=h * d_k, N=draw(st.integers(1, max_N)), h=h, dropout=0.0, d_ff=draw(st.integers(1, 2 * max_d_model)))


def token_batches(batch: int, length: int, vocab_size: int) -> st.SearchStrategy[np.ndarray]:
    """int64 token ids [batch, length] in [0, vocab_size)."""
    return hnp.arrays(np.int64, (batch, length), elements=st.integers(0, vocab_size - 1))


def padding_lengths(batch: int, length: int) -> st.SearchStrategy[list[int]]:
    """Per-sequence real lengths in 1..length (at least one real token each)."""
    return st.lists(st.integers(1, length), min_size=batch, max_size=batch)


MASK_KINDS = ("none", "causal", "key_padding", "random", "blog_key", "blog_full", "blog_shared")

#: Probabilities that a key is visible in a dense random bool mask (the first is what Hypothesis shrinks to).
KEEP_PROBABILITIES = (0.5, 0.25, 0.75, 0.1, 0.9)
#: Probabilities that a whole query row is masked on top of that (fully masked rows allowed only).
EMPTY_ROW_PROBABILITIES = (0.0, 0.25, 0.5, 0.75)


def dense_bools(shape: tuple[int, ...], *, empty_rows: float = 0.0) -> st.SearchStrategy[np.ndarray]:
    """bool arrays of ``shape`` with every element drawn: True with a probability drawn from
    ``KEEP_PROBABILITIES``, then each row along the last axis wholly False with probability ``empty_rows``.

    ``hnp.arrays`` of bools fills most elements with one repeated value, so half of its masks come out all-True or
    all-False (a mask that compares nothing, or none at all). As in ``dense_arrays``, a seed is drawn and a NumPy
    generator fills the elements (Hypothesis shrinks the seed and the probabilities, not the elements).
    """
    def make(args: tuple[float, int]) -> np.ndarray:
        p, seed = args
        rng = np.random.default_rng(seed)
        mask = rng.random(shape) < p
        if empty_rows:
            mask &= ~(rng.random(shape[:-1] + (1,)) < empty_rows)
        return mask

    return st.tuples(st.sampled_from(KEEP_PROBABILITIES), st.integers(0, 2**32 - 1)).map(make)


@st.composite
def masks(draw, cfg: AttentionConfig, *, kind: str | None = None, allow_fully_masked: bool = True
          ) -> tuple[str, np.ndarray | None]:
    """A contract mask (bool, True = may attend) for ``cfg``, as (kind, array or None).

    Kinds: none; causal [1, 1, Lq, Lk] (query i sees keys <= i + Lk - Lq, i.e. bottom-right aligned when
    Lq != Lk); key_padding [B, 1, 1, Lk]; random [B, h, Lq, Lk]; and the blog's shapes: blog_key [B, 1, 1, Lk],
    blog_full [B, 1, Lq, Lk], blog_shared [1, Lq, Lk].

    Every mask compares something: in every (batch, head) slice it broadcasts to, the last query row has a visible
    key (causal: the last row sees every key; key_padding, blog_key: lengths 1..Lk, so every row of every sequence
    has one; the random kinds: drawn densely by ``dense_bools``, with one key of the last row unmasked if it had
    none). With ``allow_fully_masked=True`` the random kinds (and causal when Lq > Lk) still hold fully masked rows,
    as extra rows beside it; with ``allow_fully_masked=False`` every query row keeps at least one key.
    """
    kind = kind or draw(st.sampled_from(MASK_KINDS))
    B, h, Lq, Lk = cfg.B, cfg.h, cfg.Lq, cfg.Lk
    if kind == "none":
        return kind, None
    if kind == "causal":
        mask = np.tril(np.ones((Lq, Lk), dtype=bool), k=Lk - Lq)[None, None]
    elif kind in ("key_padding", "blog_key"):
        # A length 0 would mask every row of its sequence: that sequence would compare nothing.
        lengths = draw(padding_lengths(B, Lk))
        mask = (np.arange(Lk)[None, :] < np.asarray(lengths)[:, None])[:, None, None, :]
    else:
        shape = {"random": (B, h if per_head_masks() else 1, Lq, Lk), "blog_full": (B, 1, Lq, Lk), "blog_shared": (1, Lq, Lk)}[kind]
        empty_rows = draw(st.sampled_from(EMPTY_ROW_PROBABILITIES)) if allow_fully_masked else 0.0
        mask = _keep_one_key_in_last_row(draw(dense_bools(shape, empty_rows=empty_rows)),
                                         key=draw(st.integers(0, Lk - 1)))
    if not allow_fully_masked:
        mask = _keep_one_key(mask)
    return kind, mask


def _keep_one_key_in_last_row(mask: np.ndarray, *, key: int) -> np.ndarray:
    """Unmask ``key`` in the last query row of every slice where that row has no visible key."""
    mask = mask.copy()
    last = mask[..., -1, :]  # a view
    last[..., key] |= ~last.any(axis=-1)
    return mask


def masks_a_visible_row_key(mask: np.ndarray | None) -> bool:
    """Whether ``mask`` masks some key of a query row that has a visible key (what a zero-weight check checks)."""
    if mask is None:
        return False
    mask = np.asarray(mask, dtype=bool)
    return bool((~mask & mask.any(axis=-1, keepdims=True)).any())


def _mask_one_visible_key(mask: np.ndarray, *, key: int) -> np.ndarray:
    """``mask`` itself when it masks a key of a row with a visible key; else ``key`` is masked in the last query
    row of every slice (each such row sees every key, Lk >= 2, so it keeps one)."""
    if masks_a_visible_row_key(mask):
        return mask
    mask = mask.copy()
    mask[..., -1, key] = False
    return mask


def _keep_one_key(mask: np.ndarray) -> np.ndarray:
    """Unmask the last key of every row that has no visible key."""
    mask = mask.copy()
    empty = ~mask.any(axis=-1)
    mask[..., -1] |= empty
    return mask


# --------------------------------------------------------------------------------- oracle equivalence cases
@dataclass(frozen=True)
class DropoutMode:
    """How a module runs: eval with dropout ``p`` > 0 built in (eval must switch it off), or train with p = 0."""

    train: bool
    p: float


def dropout_modes() -> st.SearchStrategy[DropoutMode]:
    """Eval with p in {0.1, 0.5}, or train with p = 0: both must compute the deterministic forward."""
    evals = st.sampled_from((0.1, 0.5)).map(lambda p: DropoutMode(train=False, p=p))
    return st.one_of(evals, st.just(DropoutMode(train=True, p=0.0)))


def sequence_lengths(max_len: int, *, typical: int = 8, min_len: int = 1) -> st.SearchStrategy[int]:
    """Lengths in min_len..max_len, mostly <= ``typical`` (fast runs that still reach ``max_len``)."""
    return st.integers(min_len, max(min_len, min(typical, max_len))) | st.integers(min_len, max_len)


@dataclass(frozen=True)
class AttentionInputs:
    """Inputs of an attention-bearing component (float64 arrays, to be cast to the dtype under test).

    x: [B, Lq, d]; memory: [B, Lk, d] for cross-attention, None for self-attention (then Lk == Lq);
    mask: for x attending over memory (or over itself), broadcastable to [B, h, Lq, Lk];
    self_mask: only with ``decoder=True``, for x attending over itself, broadcastable to [B, h, Lq, Lq].
    """

    cfg: AttentionConfig
    scale: str
    x: np.ndarray
    memory: np.ndarray | None
    mask_kind: str
    mask: np.ndarray | None
    self_mask_kind: str | None = None
    self_mask: np.ndarray | None = None

    def describe(self) -> dict:
        """The configuration (no arrays) for ``note`` and failure messages."""
        return {"B": self.cfg.B, "h": self.cfg.h, "d_k": self.cfg.d_k, "d_model": self.cfg.d_model,
                "Lq": self.cfg.Lq, "Lk": self.cfg.Lk, "scale": self.scale, "mask": self.mask_kind,
                "self_mask": self.self_mask_kind}


#: Source masks a whole model can take: they must broadcast over both [.., Ls, Ls] and [.., Lt, Ls].
MODEL_SRC_MASK_KINDS = ("none", "key_padding", "blog_key")
#: Target masks for decoder self-attention [.., Lt, Lt].
MODEL_TGT_MASK_KINDS = ("none", "causal", "random", "blog_full", "blog_shared")


@dataclass(frozen=True)
class ModelInputs:
    """A model configuration with token batches src [B, Ls], tgt [B, Lt] and their masks (no fully masked row)."""

    cfg: ModelConfig
    src: np.ndarray
    tgt: np.ndarray
    src_mask_kind: str
    src_mask: np.ndarray | None
    tgt_mask_kind: str
    tgt_mask: np.ndarray | None

    def describe(self) -> dict:
        return {**self.cfg.kwargs(), "B": self.src.shape[0], "Ls": self.src.shape[1], "Lt": self.tgt.shape[1],
                "src_mask": self.src_mask_kind, "tgt_mask": self.tgt_mask_kind}


@st.composite
def model_inputs(draw, *, max_d_model: int = 64, max_N: int = 3, max_len: int = 16, max_batch: int = 3
                 ) -> ModelInputs:
    """A small model (``model_configs``), tokens within its seq_len and vocabularies, and masks that drive it."""
    cfg = draw(model_configs(max_d_model=max_d_model, max_N=max_N, max_len=max_len))
    B = draw(st.integers(1, max_batch))
    Ls = draw(st.integers(1, cfg.src_seq_len))
    Lt = draw(st.integers(1, cfg.tgt_seq_len))
    src = draw(token_batches(B, Ls, cfg.src_vocab_size))
    tgt = draw(token_batches(B, Lt, cfg.tgt_vocab_size))
    src_kind, src_mask = draw(masks(AttentionConfig(B=B, h=cfg.h, d_k=cfg.d_model // cfg.h, Lq=Ls, Lk=Ls),
                                    kind=draw(st.sampled_from(MODEL_SRC_MASK_KINDS)), allow_fully_masked=False))
    tgt_kind, tgt_mask = draw(masks(AttentionConfig(B=B, h=cfg.h, d_k=cfg.d_model // cfg.h, Lq=Lt, Lk=Lt),
                                    kind=draw(st.sampled_from(MODEL_TGT_MASK_KINDS)), allow_fully_masked=False))
    return ModelInputs(cfg, src, tgt, src_kind, src_mask, tgt_kind, tgt_mask)


# --------------------------------------------------------------------------------- intrinsic properties
#: Positional-table lengths: short tables, and long ones reaching past position 2048 (large sine arguments).
PE_LENGTHS = st.integers(1, 64) | st.integers(2049, 2304)


@st.composite
def pe_configs(draw, *, max_d_model: int = 128, lengths: st.SearchStrategy[int] = PE_LENGTHS) -> tuple[int, int]:
    """(d_model, seq_len) of a sinusoid table: even and odd widths (1 included), short and past-2048 lengths."""
    return draw(st.integers(1, max_d_model)), draw(lengths)


@dataclass(frozen=True)
class PermutedAttention:
    """One attention call's inputs (float64) and a permutation of the key/value positions.

    q: [B, Lq, d]; k, v: [B, Lk, d] (for self-attention ``Lq == Lk`` and only ``q`` is used);
    perm: a permutation of range(Lk), never the identity (Lk >= 2); key_lengths: visible keys per sequence, 1..Lk,
    at least one of them short of Lk (a key-padding mask that masks something).
    """

    cfg: AttentionConfig
    scale: str
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    perm: tuple[int, ...]
    key_lengths: tuple[int, ...]


@st.composite
def permuted_attentions(draw, *, self_attention: bool | None = None, max_batch: int = 2, max_len: int = 8,
                        max_d_model: int = 32, scales_: tuple[str, ...] = SCALES) -> PermutedAttention:
    """Shapes (Lk >= 2), inputs at a drawn scale (``dense_arrays``), a permutation of the key positions that moves
    at least one (the identity, which Hypothesis shrinks to and a length 1 forces, compares a computation with
    itself: an identity drawn becomes a swap of two neighbours), key lengths."""
    cfg = draw(attention_configs(max_batch=max_batch, max_len=max_len, max_d_model=max_d_model,
                                 self_attention=self_attention, min_len=2))
    scale = draw(st.sampled_from(scales_))
    q = draw(dense_arrays((cfg.B, cfg.Lq, cfg.d_model), scale=scale))
    k = draw(dense_arrays((cfg.B, cfg.Lk, cfg.d_model), scale=scale))
    v = draw(dense_arrays((cfg.B, cfg.Lk, cfg.d_model), scale=scale))
    perm = list(draw(st.permutations(range(cfg.Lk))))
    if perm == sorted(perm):
        i = draw(st.integers(0, cfg.Lk - 2))
        perm[i], perm[i + 1] = perm[i + 1], perm[i]
    perm = tuple(perm)
    lengths = draw(padding_lengths(cfg.B, cfg.Lk))
    lengths[draw(st.integers(0, cfg.B - 1))] = draw(st.integers(1, cfg.Lk - 1))
    lengths = tuple(lengths)
    return PermutedAttention(cfg, scale, q, k, v, perm, lengths)


@dataclass(frozen=True)
class ModelBatch:
    """A model configuration, a batch for it, and an alternative batch to overwrite some positions with.

    src: [B, Ls], tgt: [B, Lt] token ids; src_lengths: real source lengths (1..Ls; the rest is padding);
    src_alt, tgt_alt: other token ids of the same shapes; cut: a target position in 0..Lt-1.
    """

    cfg: ModelConfig
    src: np.ndarray
    tgt: np.ndarray
    src_lengths: tuple[int, ...]
    src_alt: np.ndarray
    tgt_alt: np.ndarray
    cut: int

    def describe(self) -> dict:
        return {**self.cfg.kwargs(), "B": self.src.shape[0], "Ls": self.src.shape[1], "Lt": self.tgt.shape[1],
                "src_lengths": self.src_lengths, "cut": self.cut}


@st.composite
def model_batches(draw, *, max_d_model: int = 32, max_N: int = 2, max_len: int = 10, min_len: int = 1,
                  min_batch: int = 1, max_batch: int = 3, min_d_ff: int = 1, min_d_model: int = 1) -> ModelBatch:
    """A small model (``model_configs``; d_ff >= ``min_d_ff``, d_model >= ``min_d_model`` by widening d_k) with
    token batches of lengths >= ``min_len``."""
    cfg = draw(model_configs(max_d_model=max_d_model, max_N=max_N, max_len=max_len))
    d_k = max(cfg.d_model // cfg.h, -(-min_d_model // cfg.h))
    cfg = ModelConfig(**{**cfg.kwargs(), "src_seq_len": max(cfg.src_seq_len, min_len),
                         "tgt_seq_len": max(cfg.tgt_seq_len, min_len), "d_ff": max(cfg.d_ff, min_d_ff),
                         "d_model": cfg.h * d_k})
    B = draw(st.integers(min_batch, max_batch))
    Ls = draw(st.integers(min_len, cfg.src_seq_len))
    Lt = draw(st.integers(min_len, cfg.tgt_seq_len))
    return ModelBatch(cfg, src=draw(token_batches(B, Ls, cfg.src_vocab_size)),
                      tgt=draw(token_batches(B, Lt, cfg.tgt_vocab_size)),
                      src_lengths=tuple(draw(padding_lengths(B, Ls))),
                      src_alt=draw(token_batches(B, Ls, cfg.src_vocab_size)),
                      tgt_alt=draw(token_batches(B, Lt, cfg.tgt_vocab_size)), cut=draw(st.integers(0, Lt - 1)))


@dataclass(frozen=True)
class PerturbedBatch:
    """A ``ModelBatch`` and a copy of its target (``causal_perturbations``) or source (``padding_perturbations``)
    token ids changed where the outputs compared must not depend on them.

    changed: token ids [B, L] equal to ``batch.tgt`` / ``batch.src`` but at ``where`` [B, L] (bool, at least one
    True), where every token is another one (``(token + offset) % vocab``, offset in 1..vocab-1).
    """

    batch: ModelBatch
    changed: np.ndarray
    where: np.ndarray

    def describe(self) -> dict:
        return {**self.batch.describe(), "changed_tokens": int(self.where.sum())}


@st.composite
def _changed_tokens(draw, tokens: np.ndarray, where: np.ndarray, vocab_size: int) -> np.ndarray:
    """``tokens`` with every entry at ``where`` replaced by a different id in [0, vocab_size) (vocab_size >= 2)."""
    offsets = draw(hnp.arrays(np.int64, tokens.shape, elements=st.integers(1, vocab_size - 1)))
    return np.where(where, (tokens + offsets) % vocab_size, tokens)


@st.composite
def causal_perturbations(draw, **kwargs) -> PerturbedBatch:
    """``model_batches(min_len=2, **kwargs)`` with ``cut`` in 0..Lt-2 and every target token after it (positions
    cut+1..Lt-1 of every sequence, never none) changed: a causal decoder's outputs at positions <= cut must not
    move."""
    batch = draw(model_batches(**{"min_len": 2, **kwargs}))
    Lt = batch.tgt.shape[1]
    cut = draw(st.integers(0, Lt - 2))
    where = np.zeros(batch.tgt.shape, dtype=bool)
    where[:, cut + 1:] = True
    changed = draw(_changed_tokens(batch.tgt, where, batch.cfg.tgt_vocab_size))
    return PerturbedBatch(replace(batch, cut=cut), changed, where)


@st.composite
def padding_perturbations(draw, **kwargs) -> PerturbedBatch:
    """``model_batches(min_len=2, **kwargs)`` whose source lengths leave padding in at least one drawn sequence
    (its length in 1..Ls-1, the others 1..Ls) and every padded source token (positions >= its length) changed:
    encoder outputs at real positions and every decoder output must not move."""
    batch = draw(model_batches(**{"min_len": 2, **kwargs}))
    B, Ls = batch.src.shape
    lengths = draw(padding_lengths(B, Ls))
    lengths[draw(st.integers(0, B - 1))] = draw(st.integers(1, Ls - 1))
    where = np.arange(Ls)[None, :] >= np.asarray(lengths)[:, None]
    changed = draw(_changed_tokens(batch.src, where, batch.cfg.src_vocab_size))
    return PerturbedBatch(replace(batch, src_lengths=tuple(lengths)), changed, where)


def nonzero_shifts(low: float = 1e-3, high: float = 1e3) -> st.SearchStrategy[float]:
    """Constants c with |c| log-uniform in [low, high], either sign: never 0 (nor a shift too small to change
    x + c), which Hypothesis draws often from ``st.floats(-high, high)``."""
    return st.tuples(st.sampled_from((1.0, -1.0)), st.floats(math.log(low), math.log(high))).map(
        lambda t: t[0] * math.exp(t[1]))


def log_scalings(min_factor: float = 1.1, max_factor: float = 1e2) -> st.SearchStrategy[float]:
    """log s for scalings s in [1/max_factor, 1/min_factor] or [min_factor, max_factor]: never s = 1 (log s = 0,
    which Hypothesis draws often from ``st.floats``), nor a factor too close to 1 to change s x."""
    return st.tuples(st.sampled_from((1.0, -1.0)), st.floats(math.log(min_factor), math.log(max_factor))).map(
        lambda t: t[0] * t[1])


#: Mask patterns and the shapes each can be written in (all broadcast to the same [B, h, Lq, Lk] mask).
MASK_PATTERNS = ("key_padding", "shared", "per_batch", "per_head")


@st.composite
def mask_forms(draw, *, max_batch: int = 3, max_len: int = 8, max_d_model: int = 32
               ) -> tuple[AttentionConfig, str, list[np.ndarray]]:
    """(cfg, pattern, forms): an attention shape and one random bool mask (``dense_bools``) in every shape the
    contract accepts.

    The last form is always the full [B, h, Lq, Lk] one. key_padding [B, Lk]: [B, 1, 1, Lk], [B, 1, Lq, Lk]
    (and [Lk], [1, Lk], [1, 1, Lk] when B == 1); shared [Lq, Lk]: [Lq, Lk], [1, Lq, Lk], [1, 1, Lq, Lk],
    [B, 1, Lq, Lk], [1, h, Lq, Lk]; per_batch [B, Lq, Lk]: [B, 1, Lq, Lk]; per_head [h, Lq, Lk]: [1, h, Lq, Lk].
    A form that already has the full shape (e.g. per_batch's when h == 1) is left out, since it is the full mask
    itself, and the pattern is drawn among those left with at least one other form (shared always is).
    """
    cfg = draw(attention_configs(max_batch=max_batch, max_len=max_len, max_d_model=max_d_model))
    B, h, Lq, Lk = cfg.B, cfg.h, cfg.Lq, cfg.Lk
    has_other_form = {"key_padding": B == 1 or h > 1 or Lq > 1, "shared": True, "per_batch": h > 1,
                      "per_head": B > 1 and per_head_masks()}
    pattern = draw(st.sampled_from([p for p in MASK_PATTERNS if has_other_form[p]]))
    full = (B, h, Lq, Lk)
    if pattern == "key_padding":
        base = draw(dense_bools((B, Lk)))
        forms = [base[:, None, None, :], np.broadcast_to(base[:, None, None, :], (B, 1, Lq, Lk))]
        if B == 1:
            forms += [base[0], base, base[:, None, :]]
    elif pattern == "shared":
        base = draw(dense_bools((Lq, Lk)))
        forms = [base, base[None], base[None, None], np.broadcast_to(base, (B, 1, Lq, Lk)),
                 np.broadcast_to(base, (1, h, Lq, Lk))]
    elif pattern == "per_batch":
        base = draw(dense_bools((B, Lq, Lk)))
        forms = [base[:, None]]
    else:
        base = draw(dense_bools((h, Lq, Lk)))
        forms = [base[None]]
    first = forms[0]
    forms = [f for f in forms if f.shape != full]
    forms.append(np.broadcast_to(first.reshape((1,) * (4 - first.ndim) + first.shape), full))
    return cfg, pattern, [np.array(f, copy=True) for f in forms]  # writable, contiguous


#: Integer dtypes a mask may come in (nonzero = may attend).
INT_MASK_DTYPES = (np.int64, np.int32, np.int16, np.int8, np.uint8)


@st.composite
def int_mask_twins(draw, *, max_batch: int = 3, max_len: int = 8, max_d_model: int = 32
                   ) -> tuple[AttentionConfig, str, np.ndarray, np.ndarray]:
    """(cfg, kind, bool mask, integer twin): the twin holds arbitrary nonzero integers where the mask is True."""
    cfg = draw(attention_configs(max_batch=max_batch, max_len=max_len, max_d_model=max_d_model))
    kind, mask = draw(masks(cfg, kind=draw(st.sampled_from(tuple(k for k in MASK_KINDS if k != "none")))))
    dtype = draw(st.sampled_from(INT_MASK_DTYPES))
    values = st.integers(1, 100) if dtype == np.uint8 else st.integers(1, 100) | st.integers(-100, -1)
    nonzero = draw(hnp.arrays(dtype, mask.shape, elements=values))
    return cfg, kind, mask, np.where(mask, nonzero, 0).astype(dtype)


def dropout_rates() -> st.SearchStrategy[float]:
    """Dropout probabilities p in [0.05, 0.9], away from 0.5 often enough to tell p from 1 - p."""
    return st.floats(0.05, 0.9, allow_nan=False)


@st.composite
def layer_norm_rows(draw, *, max_rows: int = 6, max_features: int = 64, min_features: int = 2,
                    scales_: tuple[str, ...] = SCALES) -> tuple[str, np.ndarray]:
    """(scale, x): float64 rows [R, d] at a drawn scale (``dense_arrays``: no repeated fill), d >= ``min_features``."""
    rows = draw(st.integers(1, max_rows))
    features = draw(st.integers(min_features, max_features))
    scale = draw(st.sampled_from(scales_))
    return scale, draw(dense_arrays((rows, features), scale=scale))


# --------------------------------------------------------------------------------- torch equivalence cases
def dense_arrays(shape: tuple[int, ...], *, scale: str = "unit") -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` with every element drawn, at a magnitude from ``SCALES`` (values float32-exact).

    ``hnp.arrays`` lets Hypothesis fill most elements with one repeated value (its ``fill``), so rows come out
    identical, layer norms see zero variance and attention is uniform, which hides a missing 1/sqrt(d_k) or a
    wrong head order. Here a seed is drawn and a NumPy generator fills every element (Hypothesis shrinks the
    seed, not the elements). tiny: |x| <= 1e-3; unit: |x| <= 1; large: |x| <= 1e3 (attention scores far past
    exp's range); offset: 1e4 + float32 noise in [-1, 1] (a naive E[x^2] - E[x]^2 variance cancels in float32).
    """
    bound = {"tiny": 1e-3, "unit": 1.0, "large": 1e3, "offset": 1.0}[scale]

    def make(seed: int) -> np.ndarray:
        values = np.random.default_rng(seed).uniform(-bound, bound, shape).astype(np.float32).astype(np.float64)
        return values + 1e4 if scale == "offset" else values

    return st.integers(0, 2**32 - 1).map(make)


@st.composite
def dense_attention_inputs(draw, *, cross: bool | None = None, decoder: bool = False, max_batch: int = 3,
                           max_len: int = 64, max_d_model: int = 128, scales: tuple[str, ...] = SCALES,
                           mask_kinds: tuple[str, ...] = MASK_KINDS, allow_fully_masked: bool = True,
                           even_heads: bool = False, require_masked_key: bool = False) -> AttentionInputs:
    """Shapes (lengths mostly <= 8), a scale, ``dense_arrays`` inputs at that scale and ``masks`` of the requested
    kinds (each compares at least one query row per batch element and head).

    ``cross``: memory of its own length (True), self-attention (False) or either (None). ``decoder=True`` implies
    cross-attention and adds a self-attention mask over x. ``even_heads`` draws h in {2, 4, 8} (torch's fused
    paths need an even head count). ``require_masked_key`` (for the zero-weight properties): lengths >= 2, no
    "none" mask, and a mask that masks a key in a query row that keeps another (``_mask_one_visible_key``), in
    the memory mask (half of the unconstrained draws mask no such key)."""
    if require_masked_key:
        mask_kinds = tuple(k for k in mask_kinds if k != "none")
    min_len = 2 if require_masked_key else 1
    if even_heads:
        h = draw(st.sampled_from((2, 4, 8)))
        d_k = draw(st.integers(1, max(1, max_d_model // h)))
    else:
        h, d_k = draw(heads_and_width(max_d_model=max_d_model))
    B = draw(st.integers(1, max_batch))
    Lq = draw(sequence_lengths(max_len, min_len=min_len))
    cross = (draw(st.booleans()) if cross is None else cross) or decoder
    Lk = draw(sequence_lengths(max_len, min_len=min_len)) if cross else Lq
    cfg = AttentionConfig(B=B, h=h, d_k=d_k, Lq=Lq, Lk=Lk)
    scale = draw(st.sampled_from(scales))
    x = draw(dense_arrays((B, Lq, h * d_k), scale=scale))
    memory = draw(dense_arrays((B, Lk, h * d_k), scale=scale)) if cross else None
    kind, mask = draw(masks(cfg, kind=draw(st.sampled_from(mask_kinds)), allow_fully_masked=allow_fully_masked))
    if require_masked_key:
        mask = _mask_one_visible_key(mask, key=draw(st.integers(0, Lk - 1)))
    if not decoder:
        return AttentionInputs(cfg, scale, x, memory, kind, mask)
    self_cfg = AttentionConfig(B=B, h=h, d_k=d_k, Lq=Lq, Lk=Lq)
    self_kind, self_mask = draw(masks(self_cfg, kind=draw(st.sampled_from(mask_kinds)),
                                      allow_fully_masked=allow_fully_masked))
    return AttentionInputs(cfg, scale, x, memory, kind, mask, self_kind, self_mask)


def feed_forward_widths(max_d_ff: int = 256) -> st.SearchStrategy[int]:
    """d_ff in 1..max_d_ff, mostly <= 32."""
    return st.integers(1, min(32, max_d_ff)) | st.integers(1, max_d_ff)


#: Key-padding mask kinds (the only ones torch's nested-tensor encoder path accepts).
KEY_PADDING_KINDS = ("key_padding", "blog_key")


@st.composite
def attention_masks(draw, *, max_len: int = 12, max_d_model: int = 32, allow_fully_masked: bool = True
                    ) -> tuple[AttentionConfig, str, np.ndarray | None]:
    """(cfg, kind, mask): an attention shape (self or cross) and a contract mask of any kind for it."""
    cfg = draw(attention_configs(max_len=max_len, max_d_model=max_d_model))
    kind, mask = draw(masks(cfg, allow_fully_masked=allow_fully_masked))
    return cfg, kind, mask


@st.composite
def fixed_shape_decoder_inputs(draw, cfg: AttentionConfig, *, scales: tuple[str, ...] = SCALES) -> AttentionInputs:
    """``DecoderBlock`` inputs of the fixed shape ``cfg``: x [B, Lq, d], memory [B, Lk, d], and random bool masks
    src [B, h, Lq, Lk], tgt [B, h, Lq, Lq] (fully masked rows included; the last row of each keeps a key). Only
    values vary between draws, so a compiled block serves them all from one graph."""
    scale = draw(st.sampled_from(scales))
    x = draw(dense_arrays((cfg.B, cfg.Lq, cfg.d_model), scale=scale))
    memory = draw(dense_arrays((cfg.B, cfg.Lk, cfg.d_model), scale=scale))
    kind, mask = draw(masks(cfg, kind="random"))
    self_cfg = AttentionConfig(B=cfg.B, h=cfg.h, d_k=cfg.d_k, Lq=cfg.Lq, Lk=cfg.Lq)
    self_kind, self_mask = draw(masks(self_cfg, kind="random"))
    return AttentionInputs(cfg, scale, x, memory, kind, mask, self_kind, self_mask)

#: Scales on which float64 results of torch itself are a trustworthy oracle (~1e-15 of the output): at 'large' and
#: 'offset' inputs torch's own float64 rounding is amplified (scores past 1e6, activations at 1e4) to ~1e-11 in
#: values and ~1e-8 in gradients; those scales are compared against torch's own error instead.
WELL_CONDITIONED_SCALES = ("tiny", "unit")
