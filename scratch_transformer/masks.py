"""Mask helpers in the contract's convention: True = may attend, False = masked."""

from __future__ import annotations

import torch

from ._checks import check_positive_int, check_tokens


def causal_mask(size: int, *, device=None) -> torch.Tensor:
    """Bool[1, size, size]: True on and below the diagonal (position t sees positions <= t)."""
    check_positive_int("size", size)
    return torch.tril(torch.ones(1, size, size, dtype=torch.bool, device=device))


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Bool[B, 1, 1, L]: True where ``tokens != pad_id``; broadcasts over heads and query positions."""
    check_tokens("tokens", tokens)
    if isinstance(pad_id, bool) or not isinstance(pad_id, int):
        raise TypeError(f"pad_id must be an int, got {type(pad_id).__name__} {pad_id!r}")
    return (tokens != pad_id)[:, None, None, :]
