"""Every Hypothesis strategy of the suite, composed from small pieces.

Dependent values are drawn, not filtered: draw ``h`` and ``d_k``, then ``d_model = h * d_k``.
Arrays come from ``hypothesis.extra.numpy`` with explicit bounds and no NaN/inf.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reference.contract import ModelConfig

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
                      self_attention: bool | None = None) -> AttentionConfig:
    """An attention shape; ``Lq != Lk`` (cross-attention) unless ``self_attention`` is True."""
    h, d_k = draw(heads_and_width(max_d_model=max_d_model))
    B = draw(st.integers(1, max_batch))
    Lq = draw(st.integers(1, max_len))
    if self_attention is None:
        self_attention = draw(st.booleans())
    Lk = Lq if self_attention else draw(st.integers(1, max_len))
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


def float_arrays(shape: tuple[int, ...], *, scale: str = "unit") -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` at a magnitude from ``SCALES``.

    tiny: |x| <= 1e-3; unit: |x| <= 1; large: |x| <= 1e3 (attention scores far past exp's range);
    offset: 1e4 + noise in [-1, 1] (a naive E[x^2] - E[x]^2 variance cancels in float32).
    """
    bound = {"tiny": 1e-3, "unit": 1.0, "large": 1e3, "offset": 1.0}[scale]
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32)
    arrays = hnp.arrays(np.float64, shape, elements=elements)
    return arrays.map(lambda a: a + 1e4) if scale == "offset" else arrays


def scales() -> st.SearchStrategy[str]:
    return st.sampled_from(SCALES)


def token_batches(batch: int, length: int, vocab_size: int) -> st.SearchStrategy[np.ndarray]:
    """int64 token ids [batch, length] in [0, vocab_size)."""
    return hnp.arrays(np.int64, (batch, length), elements=st.integers(0, vocab_size - 1))


def padding_lengths(batch: int, length: int) -> st.SearchStrategy[list[int]]:
    """Per-sequence real lengths in 1..length (at least one real token each)."""
    return st.lists(st.integers(1, length), min_size=batch, max_size=batch)


MASK_KINDS = ("none", "causal", "key_padding", "random", "blog_key", "blog_full", "blog_shared")


@st.composite
def masks(draw, cfg: AttentionConfig, *, kind: str | None = None, allow_fully_masked: bool = True
          ) -> tuple[str, np.ndarray | None]:
    """A contract mask (bool, True = may attend) for ``cfg``, as (kind, array or None).

    Kinds: none; causal [1, 1, Lq, Lk] (query i sees keys <= i + Lk - Lq, i.e. bottom-right aligned when
    Lq != Lk); key_padding [B, 1, 1, Lk]; random [B, h, Lq, Lk]; and the blog's shapes: blog_key [B, 1, 1, Lk],
    blog_full [B, 1, Lq, Lk], blog_shared [1, Lq, Lk]. With ``allow_fully_masked=False`` every query row keeps at
    least one key.
    """
    kind = kind or draw(st.sampled_from(MASK_KINDS))
    B, h, Lq, Lk = cfg.B, cfg.h, cfg.Lq, cfg.Lk
    if kind == "none":
        return kind, None
    if kind == "causal":
        mask = np.tril(np.ones((Lq, Lk), dtype=bool), k=Lk - Lq)[None, None]
    elif kind in ("key_padding", "blog_key"):
        lengths = draw(padding_lengths(B, Lk)) if not allow_fully_masked else draw(
            st.lists(st.integers(0, Lk), min_size=B, max_size=B))
        mask = (np.arange(Lk)[None, :] < np.asarray(lengths)[:, None])[:, None, None, :]
    else:
        shape = {"random": (B, h, Lq, Lk), "blog_full": (B, 1, Lq, Lk), "blog_shared": (1, Lq, Lk)}[kind]
        mask = draw(hnp.arrays(np.bool_, shape))
    if not allow_fully_masked:
        mask = _keep_one_key(mask)
    return kind, mask


def _keep_one_key(mask: np.ndarray) -> np.ndarray:
    """Unmask the last key of every row that has no visible key."""
    mask = mask.copy()
    empty = ~mask.any(axis=-1)
    mask[..., -1] |= empty
    return mask
