"""Recording the implementation's dropouts, so train mode can be judged exactly (issue 34): during a call every
dropout it draws (an ``nn.Dropout`` module, an ``F.dropout``/``torch.dropout`` call, or the ``dropout_p`` of
``F.scaled_dot_product_attention``) is drawn here instead, from a seeded generator, and kept in call order with the
shape of the tensor it fell on and its rate. ``reference.oracles.replay`` then applies the same masks at the
contract's sites (after the positional encoding, on the attention weights, on the FFN's hidden activation, on each
residual branch) in the float64 oracle.

The recorded dropout is ``x * keep / (1 - p)`` with ``keep ~ Bernoulli(1 - p)``: the implementation's own dropout
semantics (binomial fraction, scaling, eval identity) are judged apart, by ``dropout.semantics``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["Drawn", "DropoutRecorder"]


@dataclass(frozen=True)
class Drawn:
    """One dropout the implementation drew: the shape of the tensor it fell on, its rate, the kept elements
    (bool, CPU) and what drew it (``F.dropout``, ``torch.dropout``, ``scaled_dot_product_attention``)."""

    shape: tuple[int, ...]
    p: float
    keep: torch.Tensor
    via: str

    def describe(self) -> str:
        return f"a dropout (p={self.p:g}, {self.via}) on a tensor of shape {list(self.shape)}"


def _dropout_args(func: Any, args: tuple, kwargs: dict) -> tuple[torch.Tensor, float, bool, bool]:
    names = ("input", "p", "training", "inplace") if func is F.dropout else ("input", "p", "train")
    bound = dict(zip(names, args), **kwargs)
    training = bound.get("training", bound.get("train", True))
    return bound["input"], float(bound.get("p", 0.5)), bool(training), bool(bound.get("inplace", False))


class DropoutRecorder(TorchFunctionMode):
    """``with DropoutRecorder(seed) as rec: module.train()(x)``: ``rec.drawn`` lists every dropout of the call."""

    DROPOUTS = (F.dropout, torch.dropout)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)
        self.drawn: list[Drawn] = []

    def _drop(self, x: torch.Tensor, p: float, via: str) -> torch.Tensor:
        keep = torch.rand(tuple(x.shape), generator=self.generator, dtype=torch.float64) >= p
        self.drawn.append(Drawn(tuple(x.shape), p, keep, via))
        scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
        return torch.where(keep.to(x.device), x * scale, torch.zeros((), dtype=x.dtype, device=x.device))

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in self.DROPOUTS:
            x, p, training, inplace = _dropout_args(func, args, kwargs)
            if training and p > 0:
                out = self._drop(x, p, "F.dropout" if func is F.dropout else "torch.dropout")
                return x.copy_(out) if inplace else out
        elif func is F.scaled_dot_product_attention and float(kwargs.get("dropout_p", args[4] if len(args) > 4
                                                                      else 0.0)) > 0:
            return self._attention(*args, **kwargs)
        return func(*args, **kwargs)

    def _attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                   scale: float | None = None, **_: Any) -> torch.Tensor:
        """``F.scaled_dot_product_attention`` with its dropout drawn here: softmax(q k^T * scale + mask), dropped, @ v."""
        scores = query @ key.transpose(-2, -1) * (1.0 / math.sqrt(query.shape[-1]) if scale is None else scale)
        if is_causal:
            causal = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:
            scores = (scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                      else scores + attn_mask)
        weights = torch.softmax(scores, dim=-1)
        return self._drop(weights, float(dropout_p), "scaled_dot_product_attention") @ value
