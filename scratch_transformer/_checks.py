"""Input validation shared by the modules: raise early, name the argument and its value."""

from __future__ import annotations

import torch

Shape = tuple[int, ...]


def check_positive_int(name: str, value: object) -> None:
    """Raise unless ``value`` is an int > 0 (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name}={value} must be a positive integer")


def check_dropout(value: object) -> None:
    """Raise unless ``value`` is a probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"dropout must be a float in [0, 1), got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"dropout={value} is outside [0, 1)")


def check_features(name: str, x: torch.Tensor, features: int, *, ndim: int | None = None) -> None:
    """Raise unless ``x`` is floating, has ``ndim`` dims (when given) and its last dim is ``features``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if x.dim() == 0 or x.shape[-1] != features:
        raise ValueError(f"{name} has last dimension {tuple(x.shape)[-1:] or '()'} != d_model={features} "
                         f"(shape {tuple(x.shape)})")


def check_tokens(name: str, tokens: torch.Tensor) -> None:
    """Raise unless ``tokens`` is an integer tensor of shape [B, L]."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
    if tokens.dim() != 2:
        raise ValueError(f"{name} must have shape [B, L], got {tuple(tokens.shape)}")


def check_mask(mask: torch.Tensor | None, target: Shape) -> None:
    """Raise unless ``mask`` is None or a bool/integer tensor that broadcasts to ``target`` = [B, h, Lq, Lk].

    Masks with fewer than 4 dims line up with the trailing dims of [B, h, Lq, Lk], so a 3-D mask's first dim
    meets the head axis: it must be 1 there (a [B, Lq, Lk] mask would silently land on the heads). Per-batch
    or per-head masks must be written 4-D.
    """
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be None or a torch.Tensor, got {type(mask).__name__}")
    if mask.is_floating_point() or mask.is_complex():
        raise TypeError(f"mask must be a bool or integer tensor (nonzero = may attend), got dtype {mask.dtype}")
    shape = tuple(mask.shape)
    if len(shape) > 4:
        raise ValueError(f"mask of shape {shape} has more than 4 dims; expected broadcastable to "
                         f"[B, h, Lq, Lk]={target}")
    padded = (1,) * (4 - len(shape)) + shape
    axes = ("B", "h", "Lq", "Lk")
    for axis, have, want in zip(axes, padded, target):
        if have not in (1, want):
            raise ValueError(f"mask of shape {shape} cannot broadcast to [B, h, Lq, Lk]={target}: "
                             f"size {have} on axis {axis} (expected 1 or {want})")
    if len(shape) == 3 and shape[0] != 1:
        raise ValueError(f"mask of shape {shape} is ambiguous: a 3-D mask lines up with [h, Lq, Lk]; "
                         f"give a per-batch mask as [B, 1, Lq, Lk] and a per-head mask as [1, h, Lq, Lk]")
