"""Where does a mismatch start? The first contract submodule whose output leaves tolerance, by its dotted path.

``localize(model, src, tgt, src_mask, tgt_mask)`` runs three things side by side on the same inputs and weights:

1. **the implementation**, with forward hooks on every submodule whose class name is a contract class
   (``contract_class(m)`` in ``CONTRACT_CLASSES``), recording each call's inputs and output in execution order;
2. **the float64 NumPy oracle** (``reference.numpy_ref``) on the model's own weights, which records every submodule
   output under the dotted path a hook gives it (``"encoder.layers.0.self_attention_block"``);
3. **the torch twin**: the same computation written with torch's own kernels (``F.embedding``, ``F.layer_norm``,
   ``F.linear``, ``F.relu``, ``F.scaled_dot_product_attention``) in the model's dtype, traced by the same paths.
   Its error against the oracle is *torch's own error* at that path.

Tolerance (``judge``): float64, and any path without a finite torch figure, uses the direct rule
``|impl - oracle| <= atol + rtol * |oracle|`` with ``tolerances.VALUE_TOL``; lower precision uses the error-ratio
rule ``max|impl - oracle| <= K * max|twin - oracle| + floor(dtype, scale)`` (``tolerances.allowed_error``), path by
path. The twin is used rather than hooks on ``nn.Transformer`` because it has a counterpart for every contract path
(embeddings, positions, each norm, each residual, projection), and ``nn.TransformerEncoderLayer``'s fast path skips
its submodules' hooks.

The **first divergence** is the first failing path in the implementation's execution order. For it a **local
check** re-runs the oracle (and the twin) on the implementation's *own* captured inputs to that submodule: if the
submodule is right on them, it was fed a wrong input by whatever called it (its parent's ``forward``); otherwise the
submodule itself is wrong. Inputs should keep at least one visible key per query row: the contract leaves the
values of fully masked rows open, so a divergence there is reported with a note, not explained.

Hyper-parameters are the caller's (``localize(..., h=..., eps=...)``: what the model was built with, ``eps``
defaulting to the contract's ``CONTRACT_EPS``), never read back from the model: a norm that stored a wrong ``eps``
is a divergence at that norm, not the yardstick.

Shapes: B batch, Ls / Lt source / target lengths, d = d_model, h heads.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import conditioning, numpy_ref, tolerances
from .compare import error_stats, keep_mask, to_f64
from .contract import ModelConfig, build_model, randomize_parameters_
from .numpy_ref import CONTRACT_EPS
from .weights import extract_weights, to_numpy

#: Class names of the contract's submodules (the root ``Transformer`` is driven, not hooked).
CONTRACT_CLASSES = frozenset({
    "InputEmbeddings", "PositionalEncoding", "LayerNormalization", "FeedForwardBlock", "MultiHeadAttentionBlock",
    "ResidualConnection", "EncoderBlock", "Encoder", "DecoderBlock", "Decoder", "ProjectionLayer",
})

#: The parameters the contract gives each leaf component (``named_parameters()`` names relative to it).
CONTRACT_PARAMETERS: dict[str, tuple[str, ...]] = {
    "InputEmbeddings": ("embedding.weight",),
    "LayerNormalization": ("alpha", "bias"),
    "FeedForwardBlock": ("linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"),
    "MultiHeadAttentionBlock": ("w_q.weight", "w_k.weight", "w_v.weight", "w_o.weight"),
    "ProjectionLayer": ("proj.weight", "proj.bias"),
}
#: Parameters a leaf component may have or not (absent = zero): the attention projections' biases.
OPTIONAL_PARAMETERS: dict[str, tuple[str, ...]] = {
    "MultiHeadAttentionBlock": tuple(f"{name}.bias" for name in numpy_ref.PROJECTIONS),
}


@dataclass(frozen=True)
class HParams:
    """The hyper-parameters the oracle and the twin compute with: the caller's, never read from the model."""

    h: int  # heads of every attention block
    eps: float = CONTRACT_EPS  # of every LayerNormalization


WEIGHTS_SUFFIX = numpy_ref.WEIGHTS_SUFFIX
join = numpy_ref.join


# --------------------------------------------------------------------------------------------------- judging
@dataclass(frozen=True)
class Verdict:
    """One comparison against the float64 oracle, and the tolerance it was held to."""

    max_abs: float
    max_rel: float
    scale: float  # max |oracle|
    torch_abs: float | None  # torch's own max abs error on the same inputs (None: no counterpart)
    rule: str  # "direct", "ratio" or "shape"
    tolerance: str  # the rule with its numbers, for people
    allowed: float  # max abs error allowed (direct rule: at the worst element)
    margin: float  # error / allowance at the worst element: <= 1 passes
    ok: bool
    index: tuple[int, ...] = ()  # where the largest abs error sits
    actual: float = math.nan  # the implementation's value there
    expected: float = math.nan  # the oracle's value there
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Implementation error / torch's own error (None without a torch figure; inf when torch's is 0)."""
        if self.torch_abs is None:
            return None
        if self.torch_abs == 0:
            return 0.0 if self.max_abs == 0 else math.inf
        return self.max_abs / self.torch_abs

    def line(self) -> str:
        """``max abs 1.2e-03 at (0, 3, 5): impl 0.5 vs oracle 0.5012; allowed 2 x ... [FAIL]``."""
        if self.rule == "shape":
            return self.note
        return (f"max abs {self.max_abs:.2e} at {self.index}: impl {self.actual:.8g} vs oracle {self.expected:.8g}; "
                f"allowed {self.allowed:.2e} ({self.tolerance})")


def judge(actual: Any, expected: Any, *, dtype: torch.dtype, torch_out: Any = None, rule: str = "auto",
          grad: bool = False, where: Any = None, sensitivity: Callable[[], Any] | None = None) -> Verdict:
    """Judge ``actual`` (the implementation) against ``expected`` (float64 oracle) with ``dtype``'s tolerance.

    ``rule="auto"``: the direct rule for float64 or without a finite ``torch_out``, else the error-ratio rule.
    Direct: ``|a - e| <= atol + rtol |e|`` elementwise, (rtol, atol) from ``VALUE_TOL`` (``GRAD_TOL`` when
    ``grad``). Ratio: ``max|a - e| <= K max|t - e| + floor(dtype, max|e|)``. ``rule="direct"`` forces the direct rule
    (torch's error is still measured, for the record). ``where`` (bool, broadcastable) restricts the elements
    compared. ``sensitivity`` (lazy; float32/float64): where the rule fails, each element may still err by
    ``COND_FACTOR`` times the oracle's sensitivity to one rounding of its inputs (``reference.conditioning``), the
    bound every backward-stable algorithm meets; the verdict's rule is then "conditioning". Never raises on a
    mismatch.
    """
    verdict = _judge(actual, expected, dtype=dtype, torch_out=torch_out, rule=rule, grad=grad, where=where)
    if verdict.ok or sensitivity is None or verdict.rule == "shape" or dtype not in (torch.float32, torch.float64):
        return verdict
    a, e = to_f64(actual), to_f64(expected)
    sens = to_f64(sensitivity()).expand_as(e)
    allowance = torch.clamp(conditioning.COND_FACTOR * sens + tolerances.floor(dtype, verdict.scale),
                            min=verdict.allowed if verdict.rule == "ratio" else 0.0)
    diff = (a - e).abs().nan_to_num(nan=math.inf)
    ratio = (diff / allowance).nan_to_num(nan=math.inf)
    if where is not None:
        ratio = torch.where(keep_mask(where, ratio), ratio, torch.zeros_like(ratio))
    worst = int(torch.argmax(ratio))
    margin = float(ratio.reshape(-1)[worst])
    if margin > 1:
        return verdict
    return dataclasses.replace(verdict, rule="conditioning", allowed=float(allowance.reshape(-1)[worst]),
                               margin=margin, ok=True,
                               tolerance=f"{conditioning.COND_FACTOR:g} x sensitivity to one rounding + floor")


def _judge(actual: Any, expected: Any, *, dtype: torch.dtype, torch_out: Any, rule: str, grad: bool,
           where: Any) -> Verdict:
    a, e = to_f64(actual), to_f64(expected)
    if a.shape != e.shape:
        return Verdict(math.inf, math.inf, 0.0, None, "shape", "shapes must match", 0.0, math.inf, False,
                       note=f"shape {tuple(a.shape)} != reference {tuple(e.shape)}")
    stats = error_stats(a, e, where)
    found = dict(index=stats.index, actual=stats.actual, expected=stats.expected)
    torch_abs = None
    if torch_out is not None:
        t = to_f64(torch_out)
        torch_abs = error_stats(t, e, where).max_abs if t.shape == e.shape else None
    use_ratio = rule == "ratio" or (rule == "auto" and dtype != torch.float64)
    if use_ratio and torch_abs is not None and math.isfinite(torch_abs):
        allowed = tolerances.allowed_error(dtype, torch_abs, stats.scale)
        text = f"{tolerances.K:g} x {torch_abs:.2e} + {tolerances.floor(dtype, stats.scale):.2e}"
        margin = stats.max_abs / allowed if allowed > 0 else (0.0 if stats.max_abs == 0 else math.inf)
        return Verdict(stats.max_abs, stats.max_rel, stats.scale, torch_abs, "ratio", text, allowed, margin,
                       stats.max_abs <= allowed, **found)
    rtol, atol = (tolerances.grad_tol if grad else tolerances.value_tol)(dtype)
    diff = (a - e).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    allowance = atol + rtol * e.abs()
    within = diff <= allowance
    ratio = diff / allowance
    if where is not None:
        keep = keep_mask(where, ratio)
        ratio = torch.where(keep, ratio, torch.zeros_like(ratio))
        within = within | ~keep
    if ratio.numel() == 0:
        margin, allowed = 0.0, atol
    else:
        worst = int(torch.argmax(ratio))
        margin, allowed = float(ratio.reshape(-1)[worst]), float(allowance.reshape(-1)[worst])
    return Verdict(stats.max_abs, stats.max_rel, stats.scale, torch_abs, "direct", f"rtol={rtol:.0e}, atol={atol:.0e}",
                   allowed, margin, bool(within.all()), **found)


# --------------------------------------------------------------------------------------------------- hooks
@dataclass
class Call:
    """One call of a contract submodule: its inputs (in ``forward``'s parameter order) and its output."""

    order: int  # completion order, 0-based
    path: str
    kind: str  # class name
    module: nn.Module = field(repr=False)
    inputs: tuple = field(repr=False)
    output: Any = field(repr=False)
    attention: torch.Tensor | None = field(default=None, repr=False)  # attention_scores after the call
    error: str = ""  # "ValueError: ..." when the call raised (then ``output`` is None)
    enclosing: tuple[str, ...] = ()  # when it raised: the contract submodules running around it, innermost first


def _bind(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
    try:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments.values())
    except (TypeError, ValueError):
        return tuple(args) + tuple(kwargs.values())


def _detach(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, tuple):
        return tuple(_detach(v) for v in x)
    return x


def contract_class(module: nn.Module) -> str:
    """The contract class name of a module: its class's name, or the contract's for a class seen through an
    ``--impl-map`` (``reference.adapter``)."""
    return getattr(type(module), "_contract_name", type(module).__name__)


def record_calls(model: nn.Module, run: Callable[[], Any]) -> tuple[Any, list[Call]]:
    """Run ``run()`` with hooks on every contract submodule of ``model``; return its result and the calls made.

    If ``run()`` raises, the result is None and the last call is the innermost submodule that was running, with
    its inputs and the exception's text in ``error``.
    """
    calls: list[Call] = []
    running: list[tuple[str, tuple]] = []  # (path, inputs) of the submodules entered and not yet left

    def enter(path: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        running.append((path, _detach(_bind(module, args, kwargs))))

    def leave(path: str, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        inputs = running.pop()[1] if running and running[-1][0] == path else _detach(_bind(module, args, kwargs))
        scores = getattr(module, "attention_scores", None)
        calls.append(Call(len(calls), path, contract_class(module), module, inputs, _detach(output),
                          scores.detach().clone() if isinstance(scores, torch.Tensor) else None))

    modules = dict(model.named_modules())
    handles = []
    for path, m in modules.items():
        if path and contract_class(m) in CONTRACT_CLASSES:
            handles.append(m.register_forward_pre_hook(lambda mod, a, kw, _p=path: enter(_p, mod, a, kw),
                                                       with_kwargs=True))
            handles.append(m.register_forward_hook(lambda mod, a, kw, out, _p=path: leave(_p, mod, a, kw, out),
                                                   with_kwargs=True))
    result = None
    try:
        result = run()
    except Exception as exc:  # the innermost running submodule raised: record it as the last call
        if not running:
            raise
        path, inputs = running[-1]
        calls.append(Call(len(calls), path, contract_class(modules[path]), modules[path], inputs, None,
                          error=f"{type(exc).__name__}: {exc}",
                          enclosing=tuple(p for p, _ in reversed(running[:-1]))))
    finally:
        for handle in handles:
            handle.remove()
    return result, calls


def _main_output(output: Any) -> Any:
    """The tensor a submodule returned (the first one if it returned a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) and output else output


# --------------------------------------------------------------------------------------------------- torch twin
def _twin_embedding(tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return F.embedding(tokens, table) * math.sqrt(table.shape[-1])  # (B, L, d)


def _twin_positional(x: torch.Tensor) -> torch.Tensor:
    table = numpy_ref.positional_encoding_table(x.shape[-2], x.shape[-1])  # (L, d) float64, cast once
    return x + torch.from_numpy(table).to(device=x.device, dtype=x.dtype)


def _twin_layer_norm(x: torch.Tensor, alpha: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    shape = (x.shape[-1],)  # a scalar gain (a contract deviation) broadcast, so the rest is still judged
    return F.layer_norm(x, shape, alpha.expand(shape), bias.expand(shape), eps)


def _twin_feed_forward(x: torch.Tensor, w: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return F.linear(F.relu(F.linear(x, w["linear_1.weight"], w.get("linear_1.bias"))),
                    w["linear_2.weight"], w.get("linear_2.bias"))


def _twin_projection(x: torch.Tensor, w: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """Attention projection ``name`` ("w_q", ...): ``x W^T (+ b)``; [B, L, d] -> [B, L, d]."""
    return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def _twin_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                    w: Mapping[str, torch.Tensor], h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MHA with ``F.scaled_dot_product_attention`` (bool mask, True = may attend; fully masked rows set to 0).

    Projections ``x W^T + b`` with each bias when ``w`` has it (``"w_q.bias"``, ...). Returns (out [B, Lq, d],
    weights [B, h, Lq, Lk]); the weights (which SDPA does not return) are torch's softmax of the scaled, masked scores
    in the same dtype.
    """
    B, Lq, d = q.shape
    Lk = k.shape[1]
    query = _twin_projection(q, w, "w_q").view(B, Lq, h, d // h).transpose(1, 2)  # (B, h, Lq, d_k)
    key = _twin_projection(k, w, "w_k").view(B, Lk, h, d // h).transpose(1, 2)  # (B, h, Lk, d_k)
    value = _twin_projection(v, w, "w_v").view(B, Lk, h, d // h).transpose(1, 2)  # (B, h, Lk, d_k)
    visible = None if mask is None else torch.broadcast_to(mask.to(q.device) != 0, (B, h, Lq, Lk))
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=visible)  # (B, h, Lq, d_k)
    scores = query @ key.transpose(-2, -1) / math.sqrt(d // h)  # (B, h, Lq, Lk)
    if visible is not None:
        seen = visible.any(dim=-1, keepdim=True)  # (B, h, Lq, 1)
        out = out.masked_fill(~seen, 0.0)
        weights = torch.softmax(scores.masked_fill(~visible, -math.inf), dim=-1).masked_fill(~seen, 0.0)
    else:
        weights = torch.softmax(scores, dim=-1)
    return _twin_projection(out.transpose(1, 2).reshape(B, Lq, d), w, "w_o"), weights


class _Twin:
    """The contract's forward written with torch kernels; each output is recorded under its path in ``trace``.

    ``w`` is keyed like ``named_parameters()`` of the module the twin stands for; ``path`` arguments are relative
    to it ("" for the module itself), as in ``numpy_ref``.
    """

    def __init__(self, w: Mapping[str, torch.Tensor], h: int, eps: float,
                 trace: dict[str, torch.Tensor] | None = None) -> None:
        self.w, self.h, self.eps = w, h, eps
        self.trace = trace if trace is not None else {}

    def rec(self, path: str, value: torch.Tensor) -> torch.Tensor:
        self.trace[path] = value
        return value

    def norm(self, x: torch.Tensor, path: str) -> torch.Tensor:
        w = numpy_ref.sub(self.w, path)
        return self.rec(path, _twin_layer_norm(x, w["alpha"], w["bias"], self.eps))

    def residual(self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor], path: str) -> torch.Tensor:
        return self.rec(path, x + sublayer(self.norm(x, join(path, "norm"))))

    def attention(self, path: str, mask: torch.Tensor | None, memory: torch.Tensor | None = None
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
        w = numpy_ref.sub(self.w, path)

        def run(y: torch.Tensor) -> torch.Tensor:
            kv = y if memory is None else memory
            out, weights = _twin_attention(y, kv, kv, mask, w, self.h)
            self.rec(path + WEIGHTS_SUFFIX, weights)
            return self.rec(path, out)
        return run

    def ffn(self, path: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda y: self.rec(path, _twin_feed_forward(y, numpy_ref.sub(self.w, path)))

    def encoder_block(self, x: torch.Tensor, mask: torch.Tensor | None, path: str = "") -> torch.Tensor:
        x = self.residual(x, self.attention(join(path, "self_attention_block"), mask),
                          join(path, "residual_connections.0"))
        x = self.residual(x, self.ffn(join(path, "feed_forward_block")), join(path, "residual_connections.1"))
        return self.rec(path, x)

    def decoder_block(self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor | None,
                      tgt_mask: torch.Tensor | None, path: str = "") -> torch.Tensor:
        x = self.residual(x, self.attention(join(path, "self_attention_block"), tgt_mask),
                          join(path, "residual_connections.0"))
        x = self.residual(x, self.attention(join(path, "cross_attention_block"), src_mask, memory),
                          join(path, "residual_connections.1"))
        x = self.residual(x, self.ffn(join(path, "feed_forward_block")), join(path, "residual_connections.2"))
        return self.rec(path, x)

    def _layers(self, path: str) -> int:
        head = join(path, "layers") + "."
        return len({name[len(head):].split(".")[0] for name in self.w if name.startswith(head)})

    def encoder(self, x: torch.Tensor, mask: torch.Tensor | None, path: str = "") -> torch.Tensor:
        for i in range(self._layers(path)):
            x = self.encoder_block(x, mask, join(path, f"layers.{i}"))
        return self.rec(path, self.norm(x, join(path, "norm")))

    def decoder(self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor | None,
                tgt_mask: torch.Tensor | None, path: str = "") -> torch.Tensor:
        for i in range(self._layers(path)):
            x = self.decoder_block(x, memory, src_mask, tgt_mask, join(path, f"layers.{i}"))
        return self.rec(path, self.norm(x, join(path, "norm")))

    def transformer(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None,
                    tgt_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.rec("src_embed", _twin_embedding(src, self.w["src_embed.embedding.weight"]))
        memory = self.encoder(self.rec("src_pos", _twin_positional(x)), src_mask, "encoder")
        y = self.rec("tgt_embed", _twin_embedding(tgt, self.w["tgt_embed.embedding.weight"]))
        y = self.decoder(self.rec("tgt_pos", _twin_positional(y)), memory, src_mask, tgt_mask, "decoder")
        return self.rec("projection_layer", F.linear(y, self.w["projection_layer.proj.weight"],
                                                     self.w.get("projection_layer.proj.bias")))


def torch_trace(model: nn.Module, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None,
                tgt_mask: torch.Tensor | None, hp: HParams) -> dict[str, torch.Tensor]:
    """Torch's own computation of every contract path, in the model's dtype, on its weights, with ``hp``."""
    w = {name: p.detach() for name, p in model.named_parameters()}
    trace: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        _Twin(w, hp.h, hp.eps, trace).transformer(src, tgt, src_mask, tgt_mask)
    return trace


# --------------------------------------------------------------------------------------------------- local check
def _np(x: Any) -> Any:
    return to_numpy(x) if isinstance(x, torch.Tensor) else x


def _local_reference(call: Call, calls: Sequence[Call], hp: HParams
                     ) -> tuple[np.ndarray, torch.Tensor | None] | None:
    """(oracle, twin) outputs of ``call``'s submodule on its own captured inputs, with ``hp``; None where not
    expressible."""
    module, inputs = call.module, call.inputs
    w64 = contract_weights(module)[0]
    wt = {name: p.detach() for name, p in module.named_parameters()}
    h, eps = hp.h, hp.eps
    x = inputs[0] if inputs else None
    kind = call.kind
    with torch.no_grad():
        if kind == "InputEmbeddings":
            return (numpy_ref.embedding(_np(x), w64["embedding.weight"]),
                    _twin_embedding(x, wt["embedding.weight"]))
        if kind == "PositionalEncoding":
            return numpy_ref.positional_encoding(_np(x)), _twin_positional(x)
        if kind == "LayerNormalization":
            return (numpy_ref.layer_norm(_np(x), w64["alpha"], w64["bias"], eps),
                    _twin_layer_norm(x, wt["alpha"], wt["bias"], eps))
        if kind == "FeedForwardBlock":
            return numpy_ref.feed_forward(_np(x), w64), _twin_feed_forward(x, wt)
        if kind == "MultiHeadAttentionBlock":
            q, k, v, mask = (list(inputs) + [None] * 4)[:4]
            return (numpy_ref.multi_head_attention(_np(q), _np(k), _np(v), _np(mask), w64, h)[0],
                    _twin_attention(q, k, v, mask, wt, h)[0])
        if kind == "ResidualConnection":
            # x + sublayer(norm(x)) with the implementation's own sublayer output: the call that finished last
            # before this one and is not this residual's norm.
            earlier = [c for c in calls[:call.order] if c.path != f"{call.path}.norm"]
            if not earlier or not isinstance(_main_output(earlier[-1].output), torch.Tensor):
                return None
            sub_out = _main_output(earlier[-1].output)
            return _np(x) + _np(sub_out), x + sub_out
        twin = _Twin(wt, h, eps)
        if kind == "EncoderBlock":
            return (numpy_ref.encoder_block(_np(x), _np(inputs[1]), w64, h, eps),
                    twin.encoder_block(x, inputs[1]))
        if kind == "Encoder":
            return numpy_ref.encoder(_np(x), _np(inputs[1]), w64, h, eps), twin.encoder(x, inputs[1])
        if kind == "DecoderBlock":
            return (numpy_ref.decoder_block(*(_np(i) for i in inputs[:4]), w64, h, eps),
                    twin.decoder_block(*inputs[:4]))
        if kind == "Decoder":
            return numpy_ref.decoder(*(_np(i) for i in inputs[:4]), w64, h, eps), twin.decoder(*inputs[:4])
        if kind == "ProjectionLayer":
            return (numpy_ref.projection(_np(x), w64),
                    F.linear(x, wt["proj.weight"], wt.get("proj.bias")))
    return None


@dataclass(frozen=True)
class LocalCheck:
    """The first divergent submodule re-run by the oracle on the implementation's own inputs to it.

    ``culprit``: the path whose own code is blamed: the submodule itself when it is wrong on its own inputs, else
    the innermost enclosing contract module that is wrong on *its* own inputs (its ``forward`` fed the submodule a
    wrong value); ``""`` (the model's ``encode``/``decode``/``project``) when every enclosing module is right.
    """

    path: str
    max_abs: float
    tolerance: str
    ok: bool  # True: right on its own inputs
    verdict: str
    culprit: str | None = None


def _judge_locally(call: Call, calls: Sequence[Call], dtype: torch.dtype, hp: HParams, *, scores: bool = False
                   ) -> Verdict | str:
    try:
        if scores:  # an attention block's attention_scores against the oracle's weights on its own inputs
            q, k, v, mask = (list(call.inputs) + [None] * 4)[:4]
            w64, wt = contract_weights(call.module)[0], {n: p.detach() for n, p in call.module.named_parameters()}
            oracle = numpy_ref.multi_head_attention(_np(q), _np(k), _np(v), _np(mask), w64, hp.h)[1]
            with torch.no_grad():
                twin = _twin_attention(q, k, v, mask, wt, hp.h)[1]
            return judge(call.attention, oracle, dtype=dtype, torch_out=twin)
        ref = _local_reference(call, calls, hp)
    except Exception as exc:  # a malformed implementation: say so rather than hide the localisation
        return f"not possible ({type(exc).__name__}: {exc})"
    if ref is None:
        return "not possible for this call"
    oracle, twin = ref
    return judge(_main_output(call.output), oracle, dtype=dtype, torch_out=twin)


def _ancestors(path: str) -> list[str]:
    """Enclosing module paths, innermost first: ``a.b.c`` -> ``[a.b, a]``."""
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def local_check(call: Call, calls: Sequence[Call], dtype: torch.dtype, hp: HParams, *, scores: bool = False
                ) -> LocalCheck:
    """Is ``call``'s submodule wrong, or was it fed a wrong input (and by whom)? See the module docstring.

    ``hp``: the hyper-parameters the model was built with. ``scores``: judge the block's ``attention_scores``
    instead of its output.
    """
    v = _judge_locally(call, calls, dtype, hp, scores=scores)
    what = f"{call.kind} at {call.path}" + (" (its attention_scores)" if scores else "")
    if isinstance(v, str):
        return LocalCheck(call.path, math.nan, "", False, f"local check of {what} {v}")
    if not v.ok:
        return LocalCheck(call.path, v.max_abs, v.tolerance, False,
                          f"{what} is wrong: on its own inputs it still differs from the oracle ({v.line()})",
                          culprit=call.path)
    first_call = {}
    for c in calls:
        first_call.setdefault(c.path, c)
    culprit = ""
    for parent in _ancestors(call.path):
        if parent in first_call:
            pv = _judge_locally(first_call[parent], calls, dtype, hp)
            if isinstance(pv, Verdict) and not pv.ok:
                culprit = parent
                break
    by = (f"{first_call[culprit].kind} at {culprit} (wrong on its own inputs: its forward feeds {call.path} a wrong "
          f"value)" if culprit else "the model's encode/decode/project (every enclosing block is right on its "
          "own inputs)")
    return LocalCheck(call.path, v.max_abs, v.tolerance, True,
                      f"{call.kind} at {call.path} is right on its own inputs (max abs {v.max_abs:.2e}): it was fed a "
                      f"wrong input, by {by}", culprit=culprit)


def _local_check_raised(call: Call, calls: Sequence[Call], hp: HParams) -> LocalCheck:
    """A submodule raised: does the oracle accept its inputs (then it is wrong) or fail on them too (then it was
    fed inconsistent inputs, by the nearest enclosing contract module, or by the model's encode/decode/project)?"""
    try:
        _local_reference(call, calls, hp)
    except Exception as exc:
        # the nearest enclosing contract module in the module tree (a residual around it only calls the block's
        # closure, so the block that owns the submodule is the one that wired its inputs)
        culprit = next((a for a in _ancestors(call.path) if a in call.enclosing), "")
        return LocalCheck(call.path, math.nan, "", True,
                          f"{call.kind} at {call.path} raised {call.error}; the oracle fails on the same inputs "
                          f"({type(exc).__name__}: {exc}): it was fed inconsistent inputs, by "
                          f"{culprit or 'the model' + chr(39) + 's encode/decode/project'}", culprit=culprit)
    return LocalCheck(call.path, math.nan, "", False,
                      f"{call.kind} at {call.path} raised {call.error} on inputs the oracle accepts: it is wrong",
                      culprit=call.path)


# --------------------------------------------------------------------------------------------------- localize
@dataclass(frozen=True)
class PathRow:
    """One submodule call judged against the oracle's output at the same path."""

    order: int
    path: str
    kind: str
    max_abs: float
    max_rel: float
    torch_abs: float | None
    tolerance: str
    allowed: float
    margin: float
    ok: bool
    note: str = ""


def jsonable(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by "inf", "-inf" or "nan" and tuples made lists (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


@dataclass
class Localization:
    """Every contract submodule's output judged in execution order, and where the disagreement starts."""

    dtype: str
    device: str
    rows: list[PathRow]
    first_divergence: str | None
    local: LocalCheck | None = None
    missing: list[str] = field(default_factory=list)  # oracle paths the implementation never ran
    notes: list[str] = field(default_factory=list)
    impl_outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    oracle_outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.first_divergence is None

    def row(self, path: str) -> PathRow | None:
        return next((r for r in self.rows if r.path == path), None)

    def to_json(self) -> dict[str, Any]:
        """Plain, strict JSON data (non-finite numbers written as the strings "inf", "-inf", "nan")."""
        return jsonable({"dtype": self.dtype, "device": self.device, "first_divergence": self.first_divergence,
                         "local_check": asdict(self.local) if self.local else None, "missing": list(self.missing),
                         "notes": list(self.notes), "paths": [asdict(r) for r in self.rows]})

    def summary(self, *, all_rows: bool = False) -> str:
        """Text for a failure message: the first divergence, the local check, and the error through every path
        from the first divergence on (every path with ``all_rows``)."""
        head = (f"localisation ({self.device}, {self.dtype}): "
                + ("every contract submodule agrees with the float64 oracle" if self.ok
                   else f"first divergence at {self.first_divergence}"))
        lines = [head]
        if self.local is not None:
            lines.append(f"  local check: {self.local.verdict}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.missing:
            lines.append(f"  never executed by the implementation: {', '.join(self.missing)}")
        start = 0 if all_rows or self.ok else next((i for i, r in enumerate(self.rows) if not r.ok), 0)
        shown = self.rows[start:]
        if shown:
            width = max(len(r.path) for r in shown)
            lines.append(f"  {'path'.ljust(width)}  {'max abs':>9}  {'max rel':>9}  {'torch abs':>9}  "
                         f"{'allowed':>9}  result")
            for r in shown:
                torch_abs = f"{r.torch_abs:9.2e}" if r.torch_abs is not None else f"{'-':>9}"
                lines.append(f"  {r.path.ljust(width)}  {r.max_abs:9.2e}  {r.max_rel:9.2e}  {torch_abs}  "
                             f"{r.allowed:9.2e}  {'ok' if r.ok else 'FAIL'}{'  ' + r.note if r.note else ''}")
        return "\n".join(lines)


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    p = next(model.parameters())
    return p.dtype, p.device


def _fully_masked(mask: torch.Tensor | None) -> bool:
    return mask is not None and bool((~(mask != 0).any(dim=-1)).any())


def contract_weights(model: nn.Module) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The model's float64 weights for the oracle, and a note per submodule path that breaks the parameter contract.

    A missing bias (``X.bias`` next to ``X.weight``) or norm gain/shift is filled with the value it stands for
    (zeros / ones) so the oracle can still run everything downstream; the submodule itself is flagged. Parameters
    beyond the contract are named in the note too (the oracle ignores them). Optional parameters
    (``OPTIONAL_PARAMETERS``: the attention projections' biases) are used when present and never flagged.
    """
    weights = extract_weights(model)
    notes: dict[str, str] = {}
    for path, module in model.named_modules():
        names = CONTRACT_PARAMETERS.get(contract_class(module))
        if names is None:
            continue
        own = {name for name, _ in module.named_parameters()}
        lacking = [n for n in names if n not in own]
        extra = sorted(own - set(names) - set(OPTIONAL_PARAMETERS.get(contract_class(module), ())))
        for name in lacking:
            key = join(path, name)
            if name.endswith("bias") and join(path, name[: -len("bias")] + "weight") in weights:
                weights[key] = np.zeros(weights[join(path, name[: -len("bias")] + "weight")].shape[0])
            elif name in ("alpha", "bias") and join(path, "bias" if name == "alpha" else "alpha") in weights:
                other = weights[join(path, "bias" if name == "alpha" else "alpha")]
                weights[key] = np.ones_like(other) if name == "alpha" else np.zeros_like(other)
        text = []
        if lacking:
            text.append(f"lacks contract parameter(s) {', '.join(lacking)} (the oracle uses the neutral value)")
        if extra:
            text.append(f"has parameters beyond the contract: {', '.join(extra)} (the oracle ignores them)")
        if text:
            notes[path] = "; ".join(text)
    return weights, notes


def localize(model: nn.Module, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None = None,
             tgt_mask: torch.Tensor | None = None, *, h: int, eps: float = CONTRACT_EPS,
             dtype: torch.dtype | None = None) -> Localization:
    """Judge every contract submodule of ``model`` on ``project(decode(encode(src, src_mask), ...))``.

    src Long[B, Ls], tgt Long[B, Lt]; masks None or bool broadcastable to [B, h, Lq, Lk] (True = may attend), on
    the model's device. ``h``: the head count the model was built with (``build_transformer(..., h=h)``); ``eps``:
    its norms' (the contract's default unless built otherwise); neither is read from the model. ``dtype`` sets the
    tolerance (default: the model's parameter dtype). Dropout is switched off for the run (``eval()``) and the
    model's mode restored afterwards.
    """
    hp = HParams(h, eps)
    model_dtype, device = _model_dtype_device(model)
    dtype = dtype or model_dtype
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, calls = record_calls(model, lambda: model.project(
                model.decode(model.encode(src, src_mask), src_mask, tgt, tgt_mask)))
            twin = torch_trace(model, src, tgt, src_mask, tgt_mask, hp)
    finally:
        model.train(was_training)
    weights, param_notes = contract_weights(model)
    oracle: dict[str, np.ndarray] = {}
    numpy_ref.transformer(to_numpy(src), to_numpy(tgt), to_numpy(src_mask), to_numpy(tgt_mask),
                          weights, hp.h, hp.eps, trace=oracle)

    rows: list[PathRow] = []
    impl_outputs: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    no_scores = []
    for call in calls:
        out = _main_output(call.output)
        if call.error:
            rows.append(PathRow(call.order, call.path, call.kind, math.inf, math.inf, None, "", 0.0, math.inf,
                                False, f"raised {call.error}"))
            continue
        if call.path in seen:
            note = "called again (only the first call is judged)"
            rows.append(PathRow(call.order, call.path, call.kind, math.nan, math.nan, None, "", math.nan, math.nan,
                                True, note))
            continue
        seen.add(call.path)
        if isinstance(out, torch.Tensor):
            impl_outputs[call.path] = to_numpy(out)
        if call.path not in oracle:
            rows.append(PathRow(call.order, call.path, call.kind, math.nan, math.nan, None, "", math.nan, math.nan,
                                True, "no counterpart in the oracle"))
            continue
        if not isinstance(out, torch.Tensor):
            rows.append(PathRow(call.order, call.path, call.kind, math.inf, math.inf, None, "", 0.0, math.inf,
                                False, f"returned {type(out).__name__}, not a tensor"))
            continue
        v = judge(out, oracle[call.path], dtype=dtype, torch_out=twin.get(call.path))
        note = "; ".join(n for n in (v.note, param_notes.get(call.path, "")) if n)
        ok = v.ok and not (call.path in param_notes and "lacks" in param_notes[call.path])
        rows.append(PathRow(call.order, call.path, call.kind, v.max_abs, v.max_rel, v.torch_abs, v.tolerance,
                            v.allowed, v.margin, ok, note))
        key = call.path + WEIGHTS_SUFFIX
        if key in oracle:  # the contract's attention_scores, judged right after the block's output
            if call.attention is None:
                no_scores.append(call.path)
                continue
            impl_outputs[key] = to_numpy(call.attention)
            v = judge(call.attention, oracle[key], dtype=dtype, torch_out=twin.get(key))
            rows.append(PathRow(call.order, key, "attention_scores", v.max_abs, v.max_rel, v.torch_abs, v.tolerance,
                                v.allowed, v.margin, v.ok, v.note))

    raised = any(c.error for c in calls)
    missing = [] if raised else [p for p in oracle if not p.endswith(WEIGHTS_SUFFIX) and p not in seen]
    first = next((r for r in rows if not r.ok), None)
    first_path = first.path if first else (missing[0] if missing else None)
    local = None
    if first is not None and "lacks contract parameter" in first.note:
        local = LocalCheck(first.path, math.nan, "", False, f"{first.kind} at {first.path} {first.note}",
                           culprit=first.path)
    elif first is not None and calls[first.order].error:
        local = _local_check_raised(calls[first.order], calls, hp)
    elif first is not None:
        local = local_check(calls[first.order], calls, dtype, hp, scores=first.kind == "attention_scores")
    notes = []
    if raised:
        notes.append("the forward raised; submodules after the failing one never ran")
    if no_scores:
        notes.append(f"no attention_scores after {', '.join(no_scores)}: attention weights not judged")
    if _fully_masked(src_mask) or _fully_masked(tgt_mask):
        notes.append("the masks fully mask some query rows, whose values the contract leaves open")
    return Localization(str(dtype).replace("torch.", ""), str(device), rows, first_path, local, missing, notes,
                        impl_outputs, oracle)


# --------------------------------------------------------------------------------------------------- random case
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
    src_lengths = np.concatenate([[Ls], rng.integers(1, Ls + 1, batch - 1)])
    tgt_lengths = np.concatenate([[Lt], rng.integers(1, Lt + 1, batch - 1)])
    src_mask = (np.arange(Ls)[None, :] < src_lengths[:, None])[:, None, None, :]  # (B, 1, 1, Ls)
    causal = np.tril(np.ones((Lt, Lt), dtype=bool))
    tgt_mask = (np.arange(Lt)[None, :] < tgt_lengths[:, None])[:, None, None, :] & causal  # (B, 1, Lt, Lt)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return Case(t(src), t(tgt), t(src_mask), t(tgt_mask))


def localize_impl(impl: Any, cfg: ModelConfig, *, seed: int = 0, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float64, batch: int = 2) -> tuple[Localization, nn.Module, Case]:
    """Build ``impl``'s model for ``cfg``, give every parameter a random non-default value, and localise."""
    model = build_model(impl, cfg, device=device, dtype=dtype)
    randomize_parameters_(model, seed)
    case = random_case(cfg, batch=batch, seed=seed, device=device)
    return localize(model, case.src, case.tgt, case.src_mask, case.tgt_mask, h=cfg.h, dtype=dtype), model, case
