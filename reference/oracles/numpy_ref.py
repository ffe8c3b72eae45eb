"""The float64 NumPy oracle: every contract component written from the paper ("Attention Is All You Need").

Plain functions, one per component, named after it. Nothing here imports torch or the implementation under test.
Weights are a ``Mapping[str, np.ndarray]`` keyed by the contract module's dotted parameter names (exactly what
``module.named_parameters()`` gives: ``"w_q.weight"``, ``"linear_1.bias"``, ``"alpha"``,
``"encoder.layers.0.self_attention_block.w_q.weight"``); ``sub(w, prefix)`` narrows a mapping to a submodule.
Linear layers follow ``nn.Linear``: ``y = x @ W.T + b``. Dropout is the identity (eval, or train with p = 0).
The attention projections ``w_q``/``w_k``/``w_v``/``w_o`` may carry biases (``"w_q.bias"``, as ``nn.Linear``'s
default and ``nn.MultiheadAttention`` have them): used when the mapping has them, zero when it does not.

Hyper-parameters (``h``, ``eps``) are arguments, never read from a module: callers pass what they built the module
with, or the contract's default ``CONTRACT_EPS``.

Variant (``reference.spec.variants``): ``residual`` and everything composed from it (the blocks, stacks and model)
take ``variant``, "pre-norm" (``x + sublayer(norm(x))``, the blog's) or "post-norm" (``norm(x + sublayer(x))``, the
paper's); None, the default, is the run's declared variant (``pytest --variant``). The stacks' final norm is the same
in both (``nn.Transformer`` keeps ``encoder_norm``/``decoder_norm`` under ``norm_first=False``).

Masks: None, or a bool/int array broadcastable to [B, h, Lq, Lk]; nonzero = may attend. Masked keys get exactly
zero weight; a query row with no visible key gets all-zero weights and so a zero output (the package's choice;
the contract only asks that such rows be finite).

Tracing: the model-level functions take ``trace`` (a dict or None) and ``path``. When ``trace`` is a dict, every
contract submodule's output is stored under the key a forward hook on ``model.named_modules()`` would give it
(``"src_embed"``, ``"encoder.layers.0.residual_connections.0.norm"``, ``"encoder.layers.0.self_attention_block"``,
``"encoder"``, ``"projection_layer"``, ...), and each attention block's weights [B, h, Lq, Lk] under
``"<path>:weights"``. ``path`` is the dotted name of the module the function stands for ("" at the top level).

Shapes: B batch, L / Lq / Lk lengths, d = d_model, h heads, d_k = d / h, d_ff the feed-forward width.
"""

from __future__ import annotations

import unittest
from typing import Callable, Iterable, Mapping, MutableMapping, Optional

import numpy as np

from reference.spec import variants

Weights = Mapping[str, np.ndarray]
Trace = MutableMapping[str, np.ndarray]
Mask = Optional[np.ndarray]  # bool/int, broadcastable to [B, h, Lq, Lk]; nonzero = may attend

#: Suffix of the trace keys holding attention weights: ``"<block path>:weights"``.
WEIGHTS_SUFFIX = ":weights"
#: ``LayerNormalization``'s default ``eps`` (the contract's): the value of every norm the kit builds without one.
CONTRACT_EPS = 1e-6
#: The attention projections, each an ``nn.Linear``-like ``<name>.weight`` [d, d] with an optional ``<name>.bias`` [d].
PROJECTIONS = ("w_q", "w_k", "w_v", "w_o")


# --------------------------------------------------------------------------------------------------- structure
class StructureMismatch(unittest.SkipTest):
    """The model holds another architecture than its constructor call asked for (N layers of each kind, d_ff).

    The oracles take the architecture from the constructor call, as they take ``h`` and ``eps``, never from the
    model: a mismatch is the ``build.structure`` clause's to judge (``tests/test_contract.py``), so a comparison that
    needs the asked architecture is not reached (a skip naming the clause, as for an unmapped API deviation)
    rather than failed under its own clause or silently run on the model's own structure.
    """


def check_structure(where: str, *, layers: int | None = None, N: int | None = None,
                    widths: Iterable[int] = (), d_ff: int | None = None) -> None:
    """Raise :class:`StructureMismatch` when ``where`` holds ``layers`` blocks (distinct weights) but the
    constructor call asked for ``N``, or a feed-forward width in ``widths`` is not the asked ``d_ff``
    (None: not asked, nothing checked)."""
    problems = []
    if N is not None and layers is not None and layers != N:
        problems.append(f"{layers} layer(s) of distinct weights where the constructor call asked N={N}")
    wrong = sorted({int(w) for w in widths} - {d_ff}) if d_ff is not None else []
    if wrong:
        problems.append(f"feed-forward width(s) {wrong} where it asked d_ff={d_ff}")
    if problems:
        exc = StructureMismatch(f"not reached because of build.structure: {where} holds " + "; ".join(problems)
                                + " (the references take the architecture from the constructor call)")
        exc.path = where.removeprefix("the ").replace("model", "")  # the contract path: "encoder", "decoder", ""
        raise exc


def _feed_forward_widths(w: Weights) -> list[int]:
    """d_ff of every feed-forward block in ``w`` (the rows of each ``...feed_forward_block.linear_1.weight``)."""
    return [int(np.shape(v)[0]) for k, v in w.items() if k.endswith("feed_forward_block.linear_1.weight")]


# --------------------------------------------------------------------------------------------------- plumbing
def sub(weights: Weights, prefix: str) -> dict[str, np.ndarray]:
    """The entries of ``weights`` under ``prefix + "."``, with that prefix stripped ("" returns a copy), in the same
    mapping type (``reference.kit.weights.Weights`` names a missing parameter instead of a bare ``KeyError``)."""
    kind = type(weights) if isinstance(weights, dict) else dict
    if not prefix:
        return kind(weights)
    head = prefix + "."
    return kind((name[len(head):], value) for name, value in weights.items() if name.startswith(head))


def join(path: str, name: str) -> str:
    """Dotted child path, as ``named_modules`` writes it: ``join("", "a") == "a"``, ``join("a", "b") == "a.b"``."""
    return f"{path}.{name}" if path else name


def _record(trace: Trace | None, key: str, value: np.ndarray) -> np.ndarray:
    if trace is not None:
        trace[key] = value
    return value


def _f64(x) -> np.ndarray:
    return np.asanyarray(x, dtype=np.float64)  # keeps reference.judge.conditioning.MCArray (Monte Carlo arithmetic)


# --------------------------------------------------------------------------------------------------- primitives
def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ W.T + b``; x [..., in], W [out, in], b [out] -> [..., out]."""
    y = _f64(x) @ _f64(weight).T
    return y if bias is None else y + _f64(bias)


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``, elementwise."""
    return np.maximum(_f64(x), 0.0)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``; entries at -inf get 0, an all -inf slice gets all 0."""
    x = _f64(x)
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)  # all -inf slice: exp(-inf - 0) = 0, no NaN
    e = np.exp(x - top)
    total = np.sum(e, axis=axis, keepdims=True)
    return e / np.where(total == 0.0, 1.0, total)


# --------------------------------------------------------------------------------------------------- components
def embedding(tokens: np.ndarray, table: np.ndarray) -> np.ndarray:
    """InputEmbeddings: ``table[tokens] * sqrt(d)``; tokens int [B, L], table [vocab, d] -> [B, L, d]."""
    table = _f64(table)
    return table[np.asarray(tokens)] * np.sqrt(table.shape[-1])


def positional_encoding_table(seq_len: int, d_model: int) -> np.ndarray:
    """``pe[pos, 2i] = sin(pos / 10000^(2i/d))``, ``pe[pos, 2i+1] = cos(pos / 10000^(2i/d))`` -> [seq_len, d]."""
    pos = np.arange(seq_len, dtype=np.float64)[:, None]  # (L, 1)
    two_i = np.arange(0, d_model, 2, dtype=np.float64)  # (ceil(d/2),)
    angle = pos / np.power(10000.0, two_i / d_model)  # (L, ceil(d/2))
    pe = np.zeros((seq_len, d_model), dtype=np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : d_model // 2])  # odd d: one cosine column fewer than sines
    return pe


def positional_encoding(x: np.ndarray) -> np.ndarray:
    """PositionalEncoding (dropout off): ``x + pe[:L]``; x [B, L, d] -> [B, L, d]."""
    x = _f64(x)
    return x + positional_encoding_table(x.shape[-2], x.shape[-1])


def layer_norm(x: np.ndarray, alpha: np.ndarray, bias: np.ndarray, eps: float = CONTRACT_EPS) -> np.ndarray:
    """``alpha * (x - mean) / sqrt(var + eps) + bias`` over the last dim, biased var; x [..., d], alpha/bias [d].

    Corrected two-pass: the second centring removes the first mean's rounding (``x - mean`` is exact when x sits
    near its mean, Sterbenz), so under a large common offset (1e4 + O(1) noise) the oracle stays at ~eps instead of
    ~eps * |x| / std.
    """
    x = _f64(x)
    centred = x - x.mean(axis=-1, keepdims=True)
    if not getattr(centred, "monte_carlo", False):
        # Under Monte Carlo arithmetic (``reference.judge.conditioning``) the oracle measures the rounding error of the
        # standard two-pass algorithm (the textbook's, PyTorch's kernels'), so the correction is left out there.
        centred = centred - centred.mean(axis=-1, keepdims=True)
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return _f64(alpha) * centred / np.sqrt(var + eps) + _f64(bias)


def feed_forward(x: np.ndarray, w: Weights) -> np.ndarray:
    """FeedForwardBlock: ``relu(x W1^T + b1) W2^T + b2``; x [B, L, d], W1 [d_ff, d], W2 [d, d_ff] -> [B, L, d]."""
    hidden = relu(linear(x, w["linear_1.weight"], w["linear_1.bias"]))  # (B, L, d_ff)
    return linear(hidden, w["linear_2.weight"], w["linear_2.bias"])


def split_heads(x: np.ndarray, h: int) -> np.ndarray:
    """[B, L, d] -> [B, h, L, d_k]: head i takes features ``i*d_k : (i+1)*d_k``."""
    B, L, d = x.shape
    return _f64(x).reshape(B, L, h, d // h).transpose(0, 2, 1, 3)


def combine_heads(x: np.ndarray) -> np.ndarray:
    """[B, h, L, d_k] -> [B, L, h * d_k], the inverse of ``split_heads``."""
    B, h, L, d_k = x.shape
    return _f64(x).transpose(0, 2, 1, 3).reshape(B, L, h * d_k)


def scaled_dot_product_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Mask = None
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """``softmax(q k^T / sqrt(d_k)) v``; q [B, h, Lq, d_k], k/v [B, h, Lk, d_k] -> ([B, h, Lq, d_k], [B, h, Lq, Lk]).

    mask: None or bool/int broadcastable to [B, h, Lq, Lk], nonzero = may attend. Masked keys weigh exactly 0;
    a row with no visible key gets zero weights and a zero output.
    """
    q, k, v = _f64(q), _f64(k), _f64(v)
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])  # (B, h, Lq, Lk)
    if mask is not None:
        visible = np.broadcast_to(np.asarray(mask) != 0, scores.shape)
        scores = np.where(visible, scores, -np.inf)
    weights = softmax(scores, axis=-1)  # masked entries: exp(-inf) = 0 exactly
    return weights @ v, weights


def attention_projection(x: np.ndarray, w: Weights, name: str) -> np.ndarray:
    """Attention projection ``name`` ("w_q", ...): ``x W^T + b``, b = ``w["<name>.bias"]`` when present, else 0;
    x [B, L, d], W [d, d], b [d] -> [B, L, d]."""
    return linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def multi_head_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Mask, w: Weights, h: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``Concat(head_1..head_h) W_o^T + b_o``, ``head_i = Attention(q W_q^T + b_q, k W_k^T + b_k, v W_v^T + b_v)``
    split into h heads; each bias is used when ``w`` has it (``"w_q.bias"``, ...), zero otherwise.

    q [B, Lq, d], k/v [B, Lk, d], W_q/W_k/W_v/W_o [d, d], b_q/b_k/b_v/b_o [d]
    -> (out [B, Lq, d], weights [B, h, Lq, Lk]).
    """
    query = split_heads(attention_projection(q, w, "w_q"), h)  # (B, h, Lq, d_k)
    key = split_heads(attention_projection(k, w, "w_k"), h)  # (B, h, Lk, d_k)
    value = split_heads(attention_projection(v, w, "w_v"), h)  # (B, h, Lk, d_k)
    heads, weights = scaled_dot_product_attention(query, key, value, mask)
    return attention_projection(combine_heads(heads), w, "w_o"), weights  # (B, Lq, d), (B, h, Lq, Lk)


def residual(x: np.ndarray, sublayer: Callable[[np.ndarray], np.ndarray], w: Weights, eps: float = CONTRACT_EPS,
             trace: Trace | None = None, path: str = "", *, variant: str | None = None) -> np.ndarray:
    """ResidualConnection: pre-norm ``x + sublayer(layer_norm(x))``, post-norm ``layer_norm(x + sublayer(x))``
    (``variant``; None: the run's); x [B, L, d], w keys norm.alpha, norm.bias."""
    if variants.resolve(variant) == variants.POST_NORM:
        summed = _f64(x) + sublayer(_f64(x))
        return _record(trace, path, _record(trace, join(path, "norm"),
                                            layer_norm(summed, w["norm.alpha"], w["norm.bias"], eps)))
    normed = _record(trace, join(path, "norm"), layer_norm(x, w["norm.alpha"], w["norm.bias"], eps))
    return _record(trace, path, _f64(x) + sublayer(normed))


def _attention_sublayer(kv: np.ndarray | None, mask: Mask, w: Weights, h: int, trace: Trace | None, path: str
                        ) -> Callable[[np.ndarray], np.ndarray]:
    """``y -> MHA(y, kv, kv)`` (self-attention when ``kv`` is None), recording output and weights at ``path``."""
    def run(y: np.ndarray) -> np.ndarray:
        memory = y if kv is None else kv
        out, weights = multi_head_attention(y, memory, memory, mask, w, h)
        _record(trace, path + WEIGHTS_SUFFIX, weights)
        return _record(trace, path, out)
    return run


def _feed_forward_sublayer(w: Weights, trace: Trace | None, path: str) -> Callable[[np.ndarray], np.ndarray]:
    return lambda y: _record(trace, path, feed_forward(y, w))


def encoder_block(x: np.ndarray, mask: Mask, w: Weights, h: int, eps: float = CONTRACT_EPS, trace: Trace | None = None,
                  path: str = "", *, variant: str | None = None) -> np.ndarray:
    """EncoderBlock: ``x = x + MHA(n(x), n(x), n(x), mask)``, then ``x + FFN(n(x))`` (pre-norm; post-norm:
    ``x = n(x + MHA(x, x, x, mask))``, then ``n(x + FFN(x))``); x [B, L, d] -> [B, L, d]."""
    attend = _attention_sublayer(None, mask, sub(w, "self_attention_block"), h, trace,
                                 join(path, "self_attention_block"))
    x = residual(x, attend, sub(w, "residual_connections.0"), eps, trace, join(path, "residual_connections.0"),
                 variant=variant)
    ffn = _feed_forward_sublayer(sub(w, "feed_forward_block"), trace, join(path, "feed_forward_block"))
    x = residual(x, ffn, sub(w, "residual_connections.1"), eps, trace, join(path, "residual_connections.1"),
                 variant=variant)
    return _record(trace, path, x)


def _num_layers(w: Weights, N: int | None = None, where: str = "the stack") -> int:
    """N when given (``StructureMismatch`` unless ``w`` holds exactly layers 0..N-1), else the layers ``w`` holds
    (a stack the caller built itself)."""
    indices = {int(name.split(".")[1]) for name in w if name.startswith("layers.")}
    if N is not None and indices != set(range(N)):
        check_structure(where, layers=len(indices), N=N)
    if indices != set(range(len(indices))):
        raise KeyError(f"layer indices {sorted(indices)} are not 0..N-1")
    return len(indices) if N is None else N


def encoder(x: np.ndarray, mask: Mask, w: Weights, h: int, eps: float = CONTRACT_EPS, trace: Trace | None = None,
            path: str = "", *, N: int | None = None, variant: str | None = None) -> np.ndarray:
    """Encoder: N encoder blocks ("layers.i.*"), then the final LayerNorm ("norm.*", under either variant);
    x [B, L, d] -> [B, L, d]. N: the constructor call's (``StructureMismatch`` when ``w`` holds another count); None:
    as many as ``w`` holds."""
    for i in range(_num_layers(w, N, path or "encoder")):
        x = encoder_block(x, mask, sub(w, f"layers.{i}"), h, eps, trace, join(path, f"layers.{i}"), variant=variant)
    x = _record(trace, join(path, "norm"), layer_norm(x, w["norm.alpha"], w["norm.bias"], eps))
    return _record(trace, path, x)


def decoder_block(x: np.ndarray, encoder_output: np.ndarray, src_mask: Mask, tgt_mask: Mask, w: Weights, h: int,
                  eps: float = CONTRACT_EPS, trace: Trace | None = None, path: str = "", *, variant: str | None = None
                  ) -> np.ndarray:
    """DecoderBlock: ``x + SelfMHA(n(x), tgt_mask)``, ``x + CrossMHA(n(x), enc, enc, src_mask)``, ``x + FFN(n(x))``
    (pre-norm; post-norm: ``n(x + SelfMHA(x, tgt_mask))``, ``n(x + CrossMHA(x, enc, enc, src_mask))``, ``n(x + FFN(x))``).

    x [B, Lt, d], encoder_output [B, Ls, d] -> [B, Lt, d]; tgt_mask for [.., Lt, Lt], src_mask for [.., Lt, Ls].
    """
    attend = _attention_sublayer(None, tgt_mask, sub(w, "self_attention_block"), h, trace,
                                 join(path, "self_attention_block"))
    x = residual(x, attend, sub(w, "residual_connections.0"), eps, trace, join(path, "residual_connections.0"),
                 variant=variant)
    cross = _attention_sublayer(_f64(encoder_output), src_mask, sub(w, "cross_attention_block"), h, trace,
                                join(path, "cross_attention_block"))
    x = residual(x, cross, sub(w, "residual_connections.1"), eps, trace, join(path, "residual_connections.1"),
                 variant=variant)
    ffn = _feed_forward_sublayer(sub(w, "feed_forward_block"), trace, join(path, "feed_forward_block"))
    x = residual(x, ffn, sub(w, "residual_connections.2"), eps, trace, join(path, "residual_connections.2"),
                 variant=variant)
    return _record(trace, path, x)


def decoder(x: np.ndarray, encoder_output: np.ndarray, src_mask: Mask, tgt_mask: Mask, w: Weights, h: int,
            eps: float = CONTRACT_EPS, trace: Trace | None = None, path: str = "", *, N: int | None = None,
            variant: str | None = None) -> np.ndarray:
    """Decoder: N decoder blocks ("layers.i.*"), then the final LayerNorm ("norm.*", under either variant);
    x [B, Lt, d] -> [B, Lt, d]. N: as in ``encoder``."""
    for i in range(_num_layers(w, N, path or "decoder")):
        x = decoder_block(x, encoder_output, src_mask, tgt_mask, sub(w, f"layers.{i}"), h, eps, trace,
                          join(path, f"layers.{i}"), variant=variant)
    x = _record(trace, join(path, "norm"), layer_norm(x, w["norm.alpha"], w["norm.bias"], eps))
    return _record(trace, path, x)


def projection(x: np.ndarray, w: Weights) -> np.ndarray:
    """ProjectionLayer: logits ``x W^T + b`` (no softmax); x [B, L, d], proj.weight [vocab, d] -> [B, L, vocab]."""
    return linear(x, w["proj.weight"], w["proj.bias"])


# --------------------------------------------------------------------------------------------------- the model
def encode(src: np.ndarray, src_mask: Mask, w: Weights, h: int, eps: float = CONTRACT_EPS,
           trace: Trace | None = None, *, N: int | None = None, variant: str | None = None) -> np.ndarray:
    """Transformer.encode: ``encoder(pe(embed(src)), src_mask)``; src int [B, Ls] -> [B, Ls, d]; w: whole model."""
    x = _record(trace, "src_embed", embedding(src, w["src_embed.embedding.weight"]))
    x = _record(trace, "src_pos", positional_encoding(x))
    return encoder(x, src_mask, sub(w, "encoder"), h, eps, trace, "encoder", N=N, variant=variant)


def decode(encoder_output: np.ndarray, src_mask: Mask, tgt: np.ndarray, tgt_mask: Mask, w: Weights, h: int,
           eps: float = CONTRACT_EPS, trace: Trace | None = None, *, N: int | None = None, variant: str | None = None
           ) -> np.ndarray:
    """Transformer.decode: ``decoder(pe(embed(tgt)), enc, src_mask, tgt_mask)``; tgt int [B, Lt] -> [B, Lt, d]."""
    x = _record(trace, "tgt_embed", embedding(tgt, w["tgt_embed.embedding.weight"]))
    x = _record(trace, "tgt_pos", positional_encoding(x))
    return decoder(x, encoder_output, src_mask, tgt_mask, sub(w, "decoder"), h, eps, trace, "decoder", N=N,
                   variant=variant)


def project(x: np.ndarray, w: Weights, trace: Trace | None = None) -> np.ndarray:
    """Transformer.project: logits [B, Lt, tgt_vocab] from x [B, Lt, d]; w: the whole model's mapping."""
    return _record(trace, "projection_layer", projection(x, sub(w, "projection_layer")))


def transformer(src: np.ndarray, tgt: np.ndarray, src_mask: Mask, tgt_mask: Mask, w: Weights, h: int,
                eps: float = CONTRACT_EPS, trace: Trace | None = None, *, N: int | None = None,
                d_ff: int | None = None, variant: str | None = None) -> np.ndarray:
    """``project(decode(encode(src, src_mask), src_mask, tgt, tgt_mask))``; src [B, Ls], tgt [B, Lt] -> logits.

    N, d_ff: the constructor call's, like ``h`` and ``eps``: ``StructureMismatch`` when ``w`` holds another layer
    count or feed-forward width (None: what ``w`` holds). variant: the residual layout (None: the run's)."""
    check_structure("the model", widths=_feed_forward_widths(w), d_ff=d_ff)
    memory = encode(src, src_mask, w, h, eps, trace, N=N, variant=variant)
    return project(decode(memory, src_mask, tgt, tgt_mask, w, h, eps, trace, N=N, variant=variant), w, trace)
