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

from reference.oracles.replay import DropoutSiteError

__all__ = ["Drawn", "DropoutRecorder", "DropoutReplayer"]


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


#: torch's own functions, kept before any recorder replaces them in ``torch.nn.functional``.
_F_DROPOUT, _SDPA = F.dropout, F.scaled_dot_product_attention


def _dropout_args(func: Any, args: tuple, kwargs: dict) -> tuple[torch.Tensor, float, bool, bool]:
    names = ("input", "p", "training", "inplace") if func is _F_DROPOUT else ("input", "p", "train")
    bound = dict(zip(names, args), **kwargs)
    training = bound.get("training", bound.get("train", True))
    return bound["input"], float(bound.get("p", 0.5)), bool(training), bool(bound.get("inplace", False))


class DropoutRecorder(TorchFunctionMode):
    """``with DropoutRecorder(seed) as rec: module.train()(x)``: ``rec.drawn`` lists every dropout of the call.

    A torch-function mode sees the calls the implementation makes; the calls torch's own composite functions make
    inside themselves (``F.multi_head_attention_forward``'s dropout or SDPA, which run with the mode set aside) are
    caught by replacing ``F.dropout`` and ``F.scaled_dot_product_attention`` in ``torch.nn.functional`` for the
    duration of the block (``nn.Dropout`` calls them there too)."""

    DROPOUTS = (_F_DROPOUT, torch.dropout)

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
                out = self._drop(x, p, "F.dropout" if func is _F_DROPOUT else "torch.dropout")
                return x.copy_(out) if inplace else out
        elif func is _SDPA and float(kwargs.get("dropout_p", args[4] if len(args) > 4
                                                                      else 0.0)) > 0:
            return self._attention(*args, **kwargs)
        return func(*args, **kwargs)

    def __enter__(self) -> "DropoutRecorder":
        def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
            return self.__torch_function__(_F_DROPOUT, (), (input, p, training, inplace), {})

        def scaled_dot_product_attention(*args: Any, **kwargs: Any) -> torch.Tensor:
            return self.__torch_function__(_SDPA, (), args, kwargs)

        self._saved = (F.dropout, F.scaled_dot_product_attention)
        F.dropout, F.scaled_dot_product_attention = dropout, scaled_dot_product_attention
        return super().__enter__()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        F.dropout, F.scaled_dot_product_attention = self._saved
        return super().__exit__(exc_type, exc, tb)

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


def _fits(recorded: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """The same tensor up to merged leading dimensions: [B, h, Lq, Lk] and torch's [B * h, Lq, Lk] (its attention
    keeps batch and heads in one dimension when it computes the weights itself)."""
    return recorded == shape or (math.prod(recorded) == math.prod(shape) and recorded[-2:] == shape[-2:])


class DropoutReplayer(DropoutRecorder):
    """``with DropoutReplayer(drawn, "EncoderBlock"): module.train()(x)``: every dropout of the call takes the next
    recorded mask (``drawn``, from a :class:`DropoutRecorder`) instead of a fresh one, so the same call, another
    implementation of it (torch's module with the same weights) or its backward sees exactly the implementation's
    dropout. A dropout beyond the recorded ones, on a tensor of another shape or at another rate, or a recorded one
    left over, is a :class:`DropoutSiteError`."""

    def __init__(self, drawn: list[Drawn], component: str) -> None:
        super().__init__(0)
        self.recorded = list(drawn)
        self.component = component

    def _drop(self, x: torch.Tensor, p: float, via: str) -> torch.Tensor:
        n = len(self.drawn)
        if n >= len(self.recorded):
            raise DropoutSiteError(f"{self.component} (train mode): a dropout (p={p:g}, {via}) on a tensor of shape "
                                   f"{list(x.shape)} beyond the {len(self.recorded)} the implementation drew")
        d = self.recorded[n]
        if not _fits(d.shape, tuple(x.shape)) or abs(d.p - p) > 1e-12:
            raise DropoutSiteError(f"{self.component} (train mode): dropout #{n + 1} (p={p:g}, {via}) falls on a "
                                   f"tensor of shape {list(x.shape)}; the implementation's dropout #{n + 1} is "
                                   f"{d.describe()}")
        self.drawn.append(d)
        keep = d.keep.reshape(tuple(x.shape)).to(x.device)
        scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
        return torch.where(keep, x * scale, torch.zeros((), dtype=x.dtype, device=x.device))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        result = super().__exit__(exc_type, exc, tb)
        if exc_type is None and len(self.drawn) < len(self.recorded):
            raise DropoutSiteError(f"{self.component} (train mode): {len(self.recorded) - len(self.drawn)} of the "
                                   f"implementation's {len(self.recorded)} dropouts have no counterpart here: "
                                   + "; ".join(d.describe() for d in self.recorded[len(self.drawn):]))
        return result
