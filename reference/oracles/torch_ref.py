"""The contract's components written with torch's own kernels: the torch reference layer.

One function per component, named as in ``numpy_ref`` (``embedding``, ``positional_encoding``, ``layer_norm``,
``feed_forward``, ``multi_head_attention``, ``projection``), computing in the inputs' dtype on the device they are on
with ``F.embedding``, ``F.layer_norm``, ``F.linear``, ``F.relu`` and ``F.scaled_dot_product_attention``. Weights are
keyed like ``named_parameters()`` of the component (``"w_q.weight"``, optional ``"w_q.bias"``); gradients flow
through them. Hyper-parameters are the caller's (``h``, ``eps``), never read from a module under test.

``Twin`` composes them into the whole model and records every output under the contract submodule's dotted path
(``"encoder.layers.0.self_attention_block"``), as ``numpy_ref`` does with ``trace=``: the localiser's "torch's own
error at that path". Its residuals follow ``variant`` (``reference.spec.variants``; None: the run's declared one), as
``numpy_ref.residual`` does. Shapes: B batch, L / Lq / Lk lengths, d = d_model, h heads.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from reference.oracles import numpy_ref
from reference.oracles.masks import MaskLike, contract_mask_4d
from reference.oracles.numpy_ref import CONTRACT_EPS, WEIGHTS_SUFFIX, join
from reference.spec import variants

Weights = Mapping[str, torch.Tensor]


def embedding(tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``table[tokens] * sqrt(d)``: Long[B, L], [V, d] -> [B, L, d]."""
    return F.embedding(tokens, table) * math.sqrt(table.shape[-1])


def positional_encoding(x: torch.Tensor) -> torch.Tensor:
    """``x + PE[:L]`` with the float64 sinusoid table rounded once to x's dtype; [B, L, d] -> [B, L, d]."""
    table = numpy_ref.positional_encoding_table(x.shape[-2], x.shape[-1])  # (L, d) float64
    return x + torch.from_numpy(table).to(device=x.device, dtype=x.dtype)


def layer_norm(x: torch.Tensor, alpha: torch.Tensor, bias: torch.Tensor, eps: float = CONTRACT_EPS) -> torch.Tensor:
    """``F.layer_norm`` over the last dim; a scalar gain (a contract deviation) is broadcast, so the rest is still
    judged. [..., d] -> [..., d]."""
    shape = (x.shape[-1],)
    return F.layer_norm(x, shape, alpha.expand(shape), bias.expand(shape), eps)


def feed_forward(x: torch.Tensor, w: Weights) -> torch.Tensor:
    """``linear_2(relu(linear_1(x)))``; [B, L, d] -> [B, L, d]."""
    return F.linear(F.relu(F.linear(x, w["linear_1.weight"], w.get("linear_1.bias"))),
                    w["linear_2.weight"], w.get("linear_2.bias"))


def _linear(x: torch.Tensor, w: Weights, name: str) -> torch.Tensor:
    """``x W^T (+ b)`` with the weights ``name.weight`` (and ``name.bias`` when present)."""
    return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def projection(x: torch.Tensor, w: Weights) -> torch.Tensor:
    """The projection layer's logits ``x W^T + b``; [B, L, d] -> [B, L, V]."""
    return _linear(x, w, "proj")


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: MaskLike, w: Weights, h: int,
                         *, need_weights: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MHA with ``F.scaled_dot_product_attention`` (contract mask: nonzero = may attend).

    Projections ``x W^T + b`` with each bias when ``w`` has it. Returns (out [B, Lq, d], weights [B, h, Lq, Lk] or
    None without ``need_weights``); the weights (which SDPA does not return) are torch's softmax of the scaled,
    masked scores in the same dtype. Rows whose keys are all masked are 0 in both (the contract leaves them open).
    """
    B, Lq, d = q.shape
    Lk = k.shape[1]
    query = _linear(q, w, "w_q").view(B, Lq, h, d // h).transpose(1, 2)  # (B, h, Lq, d_k)
    key = _linear(k, w, "w_k").view(B, Lk, h, d // h).transpose(1, 2)  # (B, h, Lk, d_k)
    value = _linear(v, w, "w_v").view(B, Lk, h, d // h).transpose(1, 2)  # (B, h, Lk, d_k)
    visible = contract_mask_4d(mask, batch=B, heads=h, len_q=Lq, len_k=Lk)
    visible = None if visible is None else visible.to(q.device)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=visible)  # (B, h, Lq, d_k)
    weights = None
    if visible is not None:
        seen = visible.expand(B, h, Lq, Lk).any(dim=-1, keepdim=True)  # (B, h, Lq, 1)
        out = out.masked_fill(~seen, 0.0)
    if need_weights:
        scores = query @ key.transpose(-2, -1) / math.sqrt(d // h)  # (B, h, Lq, Lk)
        if visible is None:
            weights = torch.softmax(scores, dim=-1)
        else:
            weights = torch.softmax(scores.masked_fill(~visible, -math.inf), dim=-1).masked_fill(~seen, 0.0)
    return _linear(out.transpose(1, 2).reshape(B, Lq, d), w, "w_o"), weights


class Twin:
    """The contract's forward written with this module's functions; each output is recorded under its path.

    ``w`` is keyed like ``named_parameters()`` of the module the twin stands for; ``path`` arguments are relative
    to it ("" for the module itself), as in ``numpy_ref``. ``variant``: the residual layout, fixed when the twin is
    built (None: the run's declared variant).
    """

    def __init__(self, w: Weights, h: int, eps: float = CONTRACT_EPS,
                 trace: dict[str, torch.Tensor] | None = None, *, variant: str | None = None) -> None:
        self.w, self.h, self.eps = w, h, eps
        self.trace = trace if trace is not None else {}
        self.variant = variants.resolve(variant)

    def rec(self, path: str, value: torch.Tensor) -> torch.Tensor:
        self.trace[path] = value
        return value

    def norm(self, x: torch.Tensor, path: str) -> torch.Tensor:
        w = numpy_ref.sub(self.w, path)
        return self.rec(path, layer_norm(x, w["alpha"], w["bias"], self.eps))

    def residual(self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor], path: str) -> torch.Tensor:
        """Pre-norm ``x + sublayer(norm(x))``; post-norm ``norm(x + sublayer(x))``."""
        if self.variant == variants.POST_NORM:
            return self.rec(path, self.norm(x + sublayer(x), join(path, "norm")))
        return self.rec(path, x + sublayer(self.norm(x, join(path, "norm"))))

    def attention(self, path: str, mask: MaskLike, memory: torch.Tensor | None = None
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
        w = numpy_ref.sub(self.w, path)

        def run(y: torch.Tensor) -> torch.Tensor:
            kv = y if memory is None else memory
            out, weights = multi_head_attention(y, kv, kv, mask, w, self.h)
            self.rec(path + WEIGHTS_SUFFIX, weights)
            return self.rec(path, out)
        return run

    def ffn(self, path: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda y: self.rec(path, feed_forward(y, numpy_ref.sub(self.w, path)))

    def encoder_block(self, x: torch.Tensor, mask: MaskLike, path: str = "") -> torch.Tensor:
        x = self.residual(x, self.attention(join(path, "self_attention_block"), mask),
                          join(path, "residual_connections.0"))
        x = self.residual(x, self.ffn(join(path, "feed_forward_block")), join(path, "residual_connections.1"))
        return self.rec(path, x)

    def decoder_block(self, x: torch.Tensor, memory: torch.Tensor, src_mask: MaskLike, tgt_mask: MaskLike,
                      path: str = "") -> torch.Tensor:
        x = self.residual(x, self.attention(join(path, "self_attention_block"), tgt_mask),
                          join(path, "residual_connections.0"))
        x = self.residual(x, self.attention(join(path, "cross_attention_block"), src_mask, memory),
                          join(path, "residual_connections.1"))
        x = self.residual(x, self.ffn(join(path, "feed_forward_block")), join(path, "residual_connections.2"))
        return self.rec(path, x)

    def _layers(self, path: str) -> int:
        head = join(path, "layers") + "."
        return len({name[len(head):].split(".")[0] for name in self.w if name.startswith(head)})

    def encoder(self, x: torch.Tensor, mask: MaskLike, path: str = "") -> torch.Tensor:
        for i in range(self._layers(path)):
            x = self.encoder_block(x, mask, join(path, f"layers.{i}"))
        return self.rec(path, self.norm(x, join(path, "norm")))

    def decoder(self, x: torch.Tensor, memory: torch.Tensor, src_mask: MaskLike, tgt_mask: MaskLike,
                path: str = "") -> torch.Tensor:
        for i in range(self._layers(path)):
            x = self.decoder_block(x, memory, src_mask, tgt_mask, join(path, f"layers.{i}"))
        return self.rec(path, self.norm(x, join(path, "norm")))

    def transformer(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: MaskLike, tgt_mask: MaskLike
                    ) -> torch.Tensor:
        x = self.rec("src_embed", embedding(src, self.w["src_embed.embedding.weight"]))
        memory = self.encoder(self.rec("src_pos", positional_encoding(x)), src_mask, "encoder")
        y = self.rec("tgt_embed", embedding(tgt, self.w["tgt_embed.embedding.weight"]))
        y = self.decoder(self.rec("tgt_pos", positional_encoding(y)), memory, src_mask, tgt_mask, "decoder")
        return self.rec("projection_layer", projection(y, numpy_ref.sub(self.w, "projection_layer")))


# The blocks, stacks and model with ``numpy_ref``'s signatures (``w`` keyed relative to the block).
def encoder_block(x: torch.Tensor, mask: MaskLike, w: Weights, h: int, eps: float = CONTRACT_EPS, *,
                  variant: str | None = None) -> torch.Tensor:
    """EncoderBlock: self-attention then feed-forward, each in a residual of ``variant``; [B, L, d] -> [B, L, d]."""
    return Twin(w, h, eps, variant=variant).encoder_block(x, mask)


def encoder(x: torch.Tensor, mask: MaskLike, w: Weights, h: int, eps: float = CONTRACT_EPS, *,
            variant: str | None = None) -> torch.Tensor:
    """Encoder: the blocks ``layers.i``, then ``norm`` (either variant); [B, L, d] -> [B, L, d]."""
    return Twin(w, h, eps, variant=variant).encoder(x, mask)


def decoder_block(x: torch.Tensor, encoder_output: torch.Tensor, src_mask: MaskLike, tgt_mask: MaskLike, w: Weights,
                  h: int, eps: float = CONTRACT_EPS, *, variant: str | None = None) -> torch.Tensor:
    """DecoderBlock: masked self-attention, cross-attention over ``encoder_output``, feed-forward; -> [B, Lt, d]."""
    return Twin(w, h, eps, variant=variant).decoder_block(x, encoder_output, src_mask, tgt_mask)


def decoder(x: torch.Tensor, encoder_output: torch.Tensor, src_mask: MaskLike, tgt_mask: MaskLike, w: Weights,
            h: int, eps: float = CONTRACT_EPS, *, variant: str | None = None) -> torch.Tensor:
    """Decoder: the blocks ``layers.i``, then ``norm`` (either variant); [B, Lt, d] -> [B, Lt, d]."""
    return Twin(w, h, eps, variant=variant).decoder(x, encoder_output, src_mask, tgt_mask)


def transformer(src: torch.Tensor, tgt: torch.Tensor, src_mask: MaskLike, tgt_mask: MaskLike, w: Weights, h: int,
                eps: float = CONTRACT_EPS, *, variant: str | None = None) -> torch.Tensor:
    """``project(decode(encode(src, src_mask), src_mask, tgt, tgt_mask))``: Long[B, Ls], Long[B, Lt] -> logits."""
    return Twin(w, h, eps, variant=variant).transformer(src, tgt, src_mask, tgt_mask)


def trace(model: torch.nn.Module, src: torch.Tensor, tgt: torch.Tensor, src_mask: MaskLike, tgt_mask: MaskLike, *,
          h: int, eps: float = CONTRACT_EPS, variant: str | None = None) -> dict[str, torch.Tensor]:
    """Torch's own computation of every contract path of ``model``, in its dtype, on its weights, with h and eps
    (residuals of ``variant``; None: the run's)."""
    w = {name: p.detach() for name, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        Twin(w, h, eps, out, variant=variant).transformer(src, tgt, src_mask, tgt_mask)
    return out
