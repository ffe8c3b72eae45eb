"""The float64 oracle in train mode: the implementation's own dropout masks (recorded in call order,
``reference.kit.replay``) applied at the contract's sites, the paper's and the blog's (issue 34):

* ``PositionalEncoding``: ``dropout(x + pe[:L])`` on [B, L, d];
* ``MultiHeadAttentionBlock``: on the attention weights [B, h, Lq, Lk], before they average the values;
* ``FeedForwardBlock``: on the hidden activation ``relu(linear_1(x))`` [B, L, d_ff];
* ``ResidualConnection``: on the sublayer's output, ``x + dropout(sublayer(norm(x)))`` (post-norm:
  ``norm(x + dropout(sublayer(x)))``) [B, L, d].

Each site takes the next recorded mask and checks that it fell on a tensor of the site's shape, at the module's
rate: a dropout missing, extra or misplaced is a :class:`DropoutSiteError` naming the site ("the contract applies
dropout to the FFN's hidden activation [B, L, d_ff]=[2, 5, 32]; the implementation's next dropout fell on a tensor
of shape [2, 5, 16]"). Where the shapes agree but the place does not (a residual dropout moved onto the sublayer's
input), the replayed output differs from the implementation's, and the comparison fails.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from reference.oracles import numpy_ref as R
from reference.oracles.numpy_ref import CONTRACT_EPS, Mask, Weights
from reference.spec import variants

__all__ = ["DropoutSiteError", "Replay", "positional_encoding", "feed_forward", "multi_head_attention", "residual",
           "encoder_block", "decoder_block", "transformer"]


class DropoutSiteError(AssertionError):
    """The implementation's dropouts do not fall where the contract puts them (missing, extra, misplaced, another
    rate): a finding of the component's formula clause."""


class Replay:
    """The recorded dropouts (``reference.kit.replay.Drawn``: ``shape``, ``p``, ``keep``, ``describe()``), taken one
    by one at the contract's sites; :meth:`done` checks none is left over."""

    def __init__(self, drawn: Sequence[Any], p: float, component: str) -> None:
        self.drawn = list(drawn)
        self.p = p
        self.component = component
        self.used = 0

    def restart(self) -> "Replay":
        """From the first recorded mask again (an oracle evaluated more than once: the conditioning bound re-runs
        it)."""
        self.used = 0
        return self

    def apply(self, x: np.ndarray, site: str) -> np.ndarray:
        """``x`` dropped by the next recorded mask, scaled by 1/(1-p): the contract's dropout at ``site``."""
        if self.p == 0:
            return x
        if self.used >= len(self.drawn):
            raise DropoutSiteError(
                f"{self.component} (train mode, p={self.p:g}): the contract applies dropout to {site} "
                f"{list(x.shape)}; the implementation drew no dropout there ({len(self.drawn)} drawn in all, "
                "each used at an earlier site)")
        d = self.drawn[self.used]
        if tuple(d.shape) != tuple(x.shape) or abs(d.p - self.p) > 1e-12:
            raise DropoutSiteError(
                f"{self.component} (train mode, p={self.p:g}): the contract applies dropout (p={self.p:g}) to {site} "
                f"{list(x.shape)}; the implementation's dropout #{self.used + 1} is {d.describe()}")
        self.used += 1
        keep = np.asarray(d.keep.numpy(), dtype=bool)
        return np.where(keep, x / (1.0 - self.p), 0.0)

    def done(self) -> None:
        """Every recorded dropout was used at a contract site."""
        extra = self.drawn[self.used:]
        if extra:
            raise DropoutSiteError(
                f"{self.component} (train mode, p={self.p:g}): the implementation drew {len(extra)} dropout(s) beyond "
                f"the contract's {self.used} site(s): " + "; ".join(d.describe() for d in extra))


def positional_encoding(x: np.ndarray, drop: Replay) -> np.ndarray:
    """``dropout(x + pe[:L])``."""
    return drop.apply(R.positional_encoding(x), "the positional encoding's sum x + pe [B, L, d]")


def feed_forward(x: np.ndarray, w: Weights, drop: Replay) -> np.ndarray:
    """``linear_2(dropout(relu(linear_1(x))))``."""
    hidden = R.relu(R.linear(x, w["linear_1.weight"], w["linear_1.bias"]))
    return R.linear(drop.apply(hidden, "the FFN's hidden activation relu(linear_1(x)) [B, L, d_ff]"),
                    w["linear_2.weight"], w["linear_2.bias"])


def multi_head_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Mask, w: Weights, h: int,
                         drop: Replay) -> np.ndarray:
    """``W_o(concat(dropout(softmax(q k^T / sqrt(d_k))) v))``: the dropout on the attention weights."""
    query = R.split_heads(R.attention_projection(q, w, "w_q"), h)
    key = R.split_heads(R.attention_projection(k, w, "w_k"), h)
    value = R.split_heads(R.attention_projection(v, w, "w_v"), h)
    _, weights = R.scaled_dot_product_attention(query, key, value, mask)
    weights = drop.apply(weights, "the attention weights softmax(q k^T / sqrt(d_k)) [B, h, Lq, Lk]")
    return R.attention_projection(R.combine_heads(weights @ value), w, "w_o")


def residual(x: np.ndarray, sublayer: Callable[[np.ndarray], np.ndarray], w: Weights, drop: Replay, *,
             eps: float = CONTRACT_EPS, variant: str | None = None) -> np.ndarray:
    """``x + dropout(sublayer(norm(x)))``, post-norm ``norm(x + dropout(sublayer(x)))``."""
    site = "the residual branch, the sublayer's output [B, L, d]"
    if variants.resolve(variant) == variants.POST_NORM:
        return R.layer_norm(x + drop.apply(sublayer(x), site), w["norm.alpha"], w["norm.bias"], eps)
    return x + drop.apply(sublayer(R.layer_norm(x, w["norm.alpha"], w["norm.bias"], eps)), site)


def encoder_block(x: np.ndarray, mask: Mask, w: Weights, h: int, drop: Replay, *, eps: float = CONTRACT_EPS,
                  variant: str | None = None) -> np.ndarray:
    """Self-attention then feed-forward, each in its residual, with every dropout of the block replayed."""
    attn = R.sub(w, "self_attention_block")
    x = residual(x, lambda y: multi_head_attention(y, y, y, mask, attn, h, drop), R.sub(w, "residual_connections.0"),
                 drop, eps=eps, variant=variant)
    ffn = R.sub(w, "feed_forward_block")
    return residual(x, lambda y: feed_forward(y, ffn, drop), R.sub(w, "residual_connections.1"), drop, eps=eps,
                    variant=variant)


def decoder_block(x: np.ndarray, memory: np.ndarray, src_mask: Mask, tgt_mask: Mask, w: Weights, h: int,
                  drop: Replay, *, eps: float = CONTRACT_EPS, variant: str | None = None) -> np.ndarray:
    """Masked self-attention, cross-attention over ``memory``, feed-forward, each in its residual."""
    self_attn, cross = R.sub(w, "self_attention_block"), R.sub(w, "cross_attention_block")
    x = residual(x, lambda y: multi_head_attention(y, y, y, tgt_mask, self_attn, h, drop),
                 R.sub(w, "residual_connections.0"), drop, eps=eps, variant=variant)
    x = residual(x, lambda y: multi_head_attention(y, memory, memory, src_mask, cross, h, drop),
                 R.sub(w, "residual_connections.1"), drop, eps=eps, variant=variant)
    ffn = R.sub(w, "feed_forward_block")
    return residual(x, lambda y: feed_forward(y, ffn, drop), R.sub(w, "residual_connections.2"), drop, eps=eps,
                    variant=variant)


def _stack(x: np.ndarray, w: Weights, block: Callable[[np.ndarray, Weights], np.ndarray], N: int | None, where: str,
           eps: float) -> np.ndarray:
    for i in range(R._num_layers(w, N, where)):
        x = block(x, R.sub(w, f"layers.{i}"))
    return R.layer_norm(x, w["norm.alpha"], w["norm.bias"], eps)


def transformer(src: np.ndarray, tgt: np.ndarray, src_mask: Mask, tgt_mask: Mask, w: Weights, h: int, drop: Replay,
                *, N: int | None = None, eps: float = CONTRACT_EPS, variant: str | None = None) -> np.ndarray:
    """``project(decode(encode(src, src_mask), src_mask, tgt, tgt_mask))`` in train mode, the dropouts in the order
    that call draws them: the source's positional encoding, each encoder block's four, the target's positional
    encoding, each decoder block's six; src [B, Ls], tgt [B, Lt] -> logits [B, Lt, vocab]."""
    x = positional_encoding(R.embedding(src, w["src_embed.embedding.weight"]), drop)
    memory = _stack(x, R.sub(w, "encoder"), lambda y, wl: encoder_block(y, src_mask, wl, h, drop, eps=eps,
                                                                         variant=variant), N, "encoder", eps)
    y = positional_encoding(R.embedding(tgt, w["tgt_embed.embedding.weight"]), drop)
    y = _stack(y, R.sub(w, "decoder"), lambda z, wl: decoder_block(z, memory, src_mask, tgt_mask, wl, h, drop,
                                                                    eps=eps, variant=variant), N, "decoder", eps)
    return R.project(y, w)
