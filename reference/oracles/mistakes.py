"""Known-wrong variants of the paper's formulas: the mistakes people make (the negative controls' catalogue), so a
root FAIL can name the one a component behaves like ("behaves like attention without the 1/sqrt(d_k) scale").

Plain NumPy, float64, one small change to the reference formula each (``reference.oracles.numpy_ref``); each table
maps the mistake's name to a function of the same inputs as the component's oracle. A name is given only when the
implementation matches that wrong formula within the comparison's own tolerance (``reference.judge.mistakes``),
after it failed the right one: never a guess, and never on a correct implementation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from reference.oracles import numpy_ref as R
from reference.oracles.numpy_ref import CONTRACT_EPS, Mask, Weights

__all__ = ["ATTENTION", "MULTI_HEAD", "LAYER_NORM", "FEED_FORWARD", "EMBEDDING", "PE_TABLE", "RESIDUAL",
           "PROJECTION"]


# ------------------------------------------------------------------------------------------------ attention
def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Mask, *, scale: float | None = None,
               axis: int = -1, mask_mode: str = "before", softmax: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``scaled_dot_product_attention`` with one knob turned: the scale, the softmax axis, how the mask is applied
    (``before`` the softmax, ``inverted``, zeroed ``after`` it) or no softmax at all."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) / (np.sqrt(q.shape[-1]) if scale is None else scale)
    visible = None if mask is None else np.broadcast_to(np.asarray(mask) != 0, scores.shape)
    if visible is not None and mask_mode == "inverted":
        visible = ~visible
    if visible is not None and mask_mode in ("before", "inverted"):
        scores = np.where(visible, scores, -np.inf)
    weights = R.softmax(scores, axis=axis) if softmax else np.where(np.isfinite(scores), scores, 0.0)
    if visible is not None and mask_mode == "after":
        weights = np.where(visible, weights, 0.0)
    return weights @ v, weights


AttentionFn = Callable[[np.ndarray, np.ndarray, np.ndarray, Mask], "tuple[np.ndarray, np.ndarray]"]

#: The static attention's mistakes: q [B, h, Lq, d_k], k/v [B, h, Lk, d_k], mask -> (out, weights).
ATTENTION: dict[str, AttentionFn] = {
    "attention without the 1/sqrt(d_k) scale": lambda q, k, v, m: _attention(q, k, v, m, scale=1.0),
    "attention scaled by 1/sqrt(d_model) instead of 1/sqrt(d_k)":
        lambda q, k, v, m: _attention(q, k, v, m, scale=float(np.sqrt(np.shape(q)[1] * np.shape(q)[-1]))),
    "a softmax over the queries (dim=-2) instead of the keys": lambda q, k, v, m: _attention(q, k, v, m, axis=-2),
    "attention without a softmax (the raw scores used as weights)":
        lambda q, k, v, m: _attention(q, k, v, m, softmax=False),
    "an inverted mask (masked_fill where the mask is nonzero)":
        lambda q, k, v, m: _attention(q, k, v, m, mask_mode="inverted"),
    "masked keys zeroed after the softmax (rows no longer sum to 1)":
        lambda q, k, v, m: _attention(q, k, v, m, mask_mode="after"),
}


def _multi_head(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Mask, w: Weights, h: int, *,
                attention: AttentionFn = R.scaled_dot_product_attention, split: str = "transpose",
                merge: str = "transpose", value_from: str = "v") -> tuple[np.ndarray, np.ndarray]:
    """``multi_head_attention`` with one knob turned: the static attention, heads split or merged by a bare
    reshape (no transpose), or the values projected from the keys."""
    def heads(x: np.ndarray) -> np.ndarray:
        B, L, d = x.shape
        return R.split_heads(x, h) if split == "transpose" else x.reshape(B, h, L, d // h)

    query = heads(R.attention_projection(q, w, "w_q"))
    key = heads(R.attention_projection(k, w, "w_k"))
    value = heads(R.attention_projection(k if value_from == "k" else v, w, "w_v"))
    out, weights = attention(query, key, value, mask)
    B, _, Lq, d_k = out.shape
    merged = R.combine_heads(out) if merge == "transpose" else out.reshape(B, Lq, h * d_k)
    return R.attention_projection(merged, w, "w_o"), weights


MultiHeadFn = Callable[[np.ndarray, np.ndarray, np.ndarray, Mask, Weights, int], "tuple[np.ndarray, np.ndarray]"]


def _with(attention: AttentionFn) -> MultiHeadFn:
    return lambda q, k, v, m, w, h: _multi_head(q, k, v, m, w, h, attention=attention)


#: The attention block's mistakes: (q, k, v [B, L, d], mask, weights, h) -> (out, weights), as
#: ``numpy_ref.multi_head_attention``.
MULTI_HEAD: dict[str, MultiHeadFn] = {
    **{name: _with(fn) for name, fn in ATTENTION.items()},
    "heads split with view(B, h, L, d_k) instead of view(B, L, h, d_k).transpose(1, 2)":
        lambda q, k, v, m, w, h: _multi_head(q, k, v, m, w, h, split="reshape"),
    "heads merged with view(B, L, d) without transposing (B, h, L, d_k) back first":
        lambda q, k, v, m, w, h: _multi_head(q, k, v, m, w, h, merge="reshape"),
    "values projected from the key input (w_v(k) instead of w_v(v))":
        lambda q, k, v, m, w, h: _multi_head(q, k, v, m, w, h, value_from="k"),
}


# ------------------------------------------------------------------------------------------------ layer norm
def _layer_norm(x: np.ndarray, alpha: np.ndarray, bias: np.ndarray, eps: float = CONTRACT_EPS, *, ddof: int = 0,
                eps_inside: bool = True) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=-1, keepdims=True)
    n = x.shape[-1]
    var = (centred * centred).sum(axis=-1, keepdims=True) / max(n - ddof, 1) if n - ddof > 0 else np.full_like(
        centred[..., :1], np.nan)
    scale = np.sqrt(var + eps) if eps_inside else np.sqrt(var) + eps
    return np.asarray(alpha, dtype=np.float64) * centred / scale + np.asarray(bias, dtype=np.float64)


#: LayerNormalization's mistakes: (x [..., d], alpha [d], bias [d], eps) -> [..., d].
LAYER_NORM: dict[str, Callable[..., np.ndarray]] = {
    "LayerNorm with the unbiased (n - 1) variance": lambda x, a, b, eps=CONTRACT_EPS: _layer_norm(x, a, b, eps, ddof=1),
    "LayerNorm with eps outside the square root (std + eps)":
        lambda x, a, b, eps=CONTRACT_EPS: _layer_norm(x, a, b, eps, eps_inside=False),
    "the blog's LayerNorm (the unbiased std, eps outside the root)":
        lambda x, a, b, eps=CONTRACT_EPS: _layer_norm(x, a, b, eps, ddof=1, eps_inside=False),
    "LayerNorm with eps = 1e-5 (torch's default) instead of the contract's 1e-6":
        lambda x, a, b, eps=CONTRACT_EPS: _layer_norm(x, a, b, 1e-5),
}


# ------------------------------------------------------------------------------------------------ the rest
#: FeedForwardBlock's mistakes: (x [B, L, d], weights) -> [B, L, d].
FEED_FORWARD: dict[str, Callable[[np.ndarray, Weights], np.ndarray]] = {
    "a feed-forward without its ReLU (linear_2(linear_1(x)))":
        lambda x, w: R.linear(R.linear(x, w["linear_1.weight"], w["linear_1.bias"]), w["linear_2.weight"],
                              w["linear_2.bias"]),
}

#: InputEmbeddings' mistakes: (tokens [B, L], table [vocab, d]) -> [B, L, d].
EMBEDDING: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "an embedding lookup without the sqrt(d_model) scale":
        lambda tokens, table: np.asarray(table, dtype=np.float64)[np.asarray(tokens)],
}


def _pe_table(seq_len: int, d_model: int, *, swapped: bool = False, exponent: str = "2i/d") -> np.ndarray:
    pos = np.arange(seq_len, dtype=np.float64)[:, None]
    two_i = np.arange(0, d_model, 2, dtype=np.float64)
    power = two_i / d_model if exponent == "2i/d" else (two_i / 2) / d_model
    angle = pos / np.power(10000.0, power)
    first, second = (np.cos, np.sin) if swapped else (np.sin, np.cos)
    pe = np.zeros((seq_len, d_model), dtype=np.float64)
    pe[:, 0::2] = first(angle)
    pe[:, 1::2] = second(angle[:, : d_model // 2])
    return pe


#: The positional table's mistakes: (seq_len, d_model) -> [seq_len, d_model].
PE_TABLE: dict[str, Callable[[int, int], np.ndarray]] = {
    "a table with sin and cos swapped (cos at even features)": lambda L, d: _pe_table(L, d, swapped=True),
    "a table with the exponent i/d instead of 2i/d": lambda L, d: _pe_table(L, d, exponent="i/d"),
}

#: ResidualConnection's mistakes: (x, sublayer, weights, eps) -> [B, L, d], as ``numpy_ref.residual`` (pre-norm).
RESIDUAL: dict[str, Callable[..., np.ndarray]] = {
    "a post-norm residual (norm(x + sublayer(x))) where the run declares pre-norm":
        lambda x, sub, w, eps=CONTRACT_EPS: R.residual(x, sub, w, eps, variant="post-norm"),
    "a pre-norm residual (x + sublayer(norm(x))) where the run declares post-norm":
        lambda x, sub, w, eps=CONTRACT_EPS: R.residual(x, sub, w, eps, variant="pre-norm"),
    "a residual without its skip connection (sublayer(norm(x)))":
        lambda x, sub, w, eps=CONTRACT_EPS: sub(R.layer_norm(x, w["norm.alpha"], w["norm.bias"], eps)),
}


def _log_softmax(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=-1, keepdims=True)
    return z - top - np.log(np.exp(z - top).sum(axis=-1, keepdims=True))


#: ProjectionLayer's mistakes: (x [B, L, d], weights) -> [B, L, vocab].
PROJECTION: dict[str, Callable[[np.ndarray, Weights], np.ndarray]] = {
    "a projection that returns log_softmax(logits) instead of the logits": lambda x, w: _log_softmax(R.projection(x, w)),
}
