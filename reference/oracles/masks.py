"""Contract masks: their shapes, which query rows they leave a key, and the one seeded generator of masks and cases.

Contract: a mask is None or a bool/int array broadcastable to [B, h, Lq, Lk], nonzero = may attend. The blog builds a
causal mask [1, L, L] and padding masks [B, 1, 1, L]; its decoder mask is both, [B, 1, Lt, Lt]. The generator draws
every random part from one ``numpy.random.Generator``, so a seed reproduces a report row, a localisation, a test.
Shapes: B batch, h heads, Lq / Lk query / key lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reference.spec.contract import per_head_masks

if TYPE_CHECKING:
    from reference.spec.contract import ModelConfig

#: A contract mask: None, or a bool/int tensor or NumPy array broadcastable to [B, h, Lq, Lk]; nonzero = attend.
MaskLike = Any
#: The mask kinds of ``make_mask``.
KINDS = ("none", "causal", "key_padding", "random", "padded_causal")


def contract_mask_4d(mask: MaskLike, *, batch: int, heads: int, len_q: int, len_k: int) -> torch.Tensor | None:
    """The contract mask as bool [b, hh, lq, lk] (True = may attend), each dim 1 or the full size.

    Leading dims are added as in broadcasting; raises ValueError when the mask does not broadcast to
    [batch, heads, len_q, len_k].
    """
    if mask is None:
        return None
    m = torch.as_tensor(mask) != 0
    if m.dim() > 4:
        raise ValueError(f"mask has {m.dim()} dims; at most 4 ([B, h, Lq, Lk])")
    m = m.reshape((1,) * (4 - m.dim()) + tuple(m.shape))
    full = (batch, heads, len_q, len_k)
    if any(s not in (1, f) for s, f in zip(m.shape, full)):
        raise ValueError(f"mask of shape {tuple(m.shape)} does not broadcast to [B, h, Lq, Lk] = {list(full)}")
    return m


def attended_rows(mask: MaskLike, *, batch: int, heads: int, len_q: int, len_k: int) -> torch.Tensor:
    """bool [B, Lq, 1]: the query rows that see at least one key in every head.

    Elsewhere torch returns NaN (or zeros on some fused paths) and the contract only asks for finite values, so
    value comparisons are restricted to these rows.
    """
    m = contract_mask_4d(mask, batch=batch, heads=heads, len_q=len_q, len_k=len_k)
    if m is None:
        return torch.ones(batch, len_q, 1, dtype=torch.bool)
    return m.expand(batch, heads, len_q, len_k).any(dim=-1).all(dim=1)[..., None]  # (B, Lq, 1)


def has_fully_masked_row(mask: MaskLike) -> bool:
    """Whether some query row of ``mask`` sees no key at all (the contract leaves its values open)."""
    return mask is not None and bool((~(torch.as_tensor(mask) != 0).any(dim=-1)).any())


# --------------------------------------------------------------------------------------------------- generator
def lengths(rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    """Int[B] sequence lengths: the first full, the others drawn from 1..length."""
    return np.concatenate([[length], rng.integers(1, length + 1, batch - 1)])


def padding(lens: np.ndarray, length: int) -> np.ndarray:
    """Bool[B, 1, 1, L]: position < length of its sequence (the blog's padding mask)."""
    return (np.arange(length)[None, :] < lens[:, None])[:, None, None, :]


def causal(len_q: int, len_k: int) -> np.ndarray:
    """Bool[Lq, Lk]: query i sees keys up to i + (Lk - Lq) (lower triangle, aligned at the end)."""
    return np.tril(np.ones((len_q, len_k), dtype=bool), k=len_k - len_q)


def make_mask(kind: str, rng: np.random.Generator, *, batch: int, heads: int, len_q: int, len_k: int
              ) -> np.ndarray | None:
    """A contract mask of ``kind`` where every query row keeps a visible key.

    none; causal [1, Lq, Lk] (the blog's causal_mask shape); key_padding [B, 1, 1, Lk]; random [B, h, Lq, Lk];
    padded_causal [B, 1, Lq, Lk] (the blog's decoder mask).
    """
    if kind == "none":
        return None
    if kind == "causal":
        return causal(len_q, len_k)[None]
    if kind == "key_padding":
        return padding(lengths(rng, batch, len_k), len_k)
    if kind == "random":  # one mask per head, unless the implementation takes none (``per_head_masks``)
        m = rng.random((batch, heads if per_head_masks() else 1, len_q, len_k)) < 0.6
        m[..., -1] |= ~m.any(axis=-1)  # keep one key per row
        return m
    if kind == "padded_causal":
        return padding(lengths(rng, batch, len_k), len_k) & np.tril(np.ones((len_q, len_k), bool))
    raise ValueError(f"unknown mask kind {kind!r}; known: {', '.join(KINDS)}")


@dataclass(frozen=True)
class Case:
    """Inputs of one full-model run: token ids, a source padding mask and a causal (and padded) target mask."""

    src: torch.Tensor  # Long[B, Ls]
    tgt: torch.Tensor  # Long[B, Lt]
    src_mask: torch.Tensor  # Bool[B, 1, 1, Ls]
    tgt_mask: torch.Tensor  # Bool[B, 1, Lt, Lt]


def random_case(cfg: ModelConfig, *, batch: int = 2, src_len: int | None = None, tgt_len: int | None = None,
                seed: int = 0, device: torch.device | str = "cpu") -> Case:
    """Tokens and masks for ``cfg``, reproducible from ``seed``; every query row keeps at least one visible key.

    Source mask: padding (each sequence has 1..Ls real tokens, the first one always full length). Target mask:
    causal and padded, as the blog builds its decoder mask.
    """
    rng = np.random.default_rng(seed)
    Ls = src_len or cfg.src_seq_len
    Lt = tgt_len or cfg.tgt_seq_len
    src = rng.integers(0, cfg.src_vocab_size, (batch, Ls))
    tgt = rng.integers(0, cfg.tgt_vocab_size, (batch, Lt))
    src_lengths, tgt_lengths = lengths(rng, batch, Ls), lengths(rng, batch, Lt)
    src_mask = padding(src_lengths, Ls)  # (B, 1, 1, Ls)
    tgt_mask = padding(tgt_lengths, Lt) & causal(Lt, Lt)  # (B, 1, Lt, Lt)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return Case(t(src), t(tgt), t(src_mask), t(tgt_mask))
