"""The equivalence report: ``python -m reference.report`` (console script ``scratch-transformer-report``).

For the implementation under test (``--impl``, default ``scratch_transformer``) it sweeps every contract component
over a few small configurations, on each device and dtype, against the float64 NumPy oracle (``numpy_ref``) and
PyTorch's own modules loaded with the same weights (``torch_adapters``), and prints one row per
component x (device, dtype): max abs / max rel error, the implementation's error over torch's own, the tolerance,
PASS/FAIL. The full model is also localised (``reference.localize``): the first contract submodule that leaves
tolerance is named by its dotted path. Exit status: 0 all PASS, 1 any FAIL, 2 usage error. Every FAIL row prints
the command that reproduces it. ``--json FILE`` writes the same data (schema in ``docs/report.md``);
``--plots DIR`` draws PNGs (``reference.plots``, needs matplotlib).

Tolerances (``reference.tolerances``): float64 rows, the embedding and the positional table use the direct rule
(``VALUE_TOL``/``GRAD_TOL``); float32 and lower use the error-ratio rule against torch's own error on the same
inputs. Every parameter is set to a random non-default value (``randomize_parameters_``), norm gains and biases too.
Hyper-parameters come from the sweep's configuration (``h``) and the contract (``eps`` = ``CONTRACT_EPS``: no norm
is built with another), never from the modules under test.
Shapes: B batch, L / Lq / Lk lengths, d = d_model.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import platform
import shlex
import sys
import time
import zlib
from dataclasses import replace, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import conditioning, contract, numpy_ref, tolerances, torch_adapters
from .contract import (DEFAULT_IMPL, ModelConfig, build_model, construct, load_impl, missing_extras,
                       randomize_parameters_)
from .compare import error_stats, relative_l2_error, to_f64
from .card import Card
from .diagnose import Diagnosis
from .localize import Localization, Verdict, jsonable, judge, localize, random_case
from .weights import CONTRACT_EPS, extract_weights, to_numpy

SCHEMA = "scratch-transformer-report/1"
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class Config:
    """One size of the sweep: the model sizes, a batch, and source/target lengths (Lq != Lk for cross)."""

    name: str
    model: ModelConfig
    batch: int
    src_len: int
    tgt_len: int

    def text(self) -> str:
        m = self.model
        return (f"{self.name}: d={m.d_model} h={m.h} d_ff={m.d_ff} N={m.N} B={self.batch} "
                f"Ls={self.src_len} Lt={self.tgt_len}")


#: Every module is built with the blog's default dropout and run in eval mode, where dropout must be the identity.
DROPOUT = 0.1
#: Input scale of ``mha/large``: scores reach the hundreds, past float32's exp range (88.7), so a softmax without the
#: max subtraction overflows; larger scales make near-tied scores' rounding (eps * |score|) dominate the output and
#: the error ratio a lottery (at 30x, seeds gave impl/torch from 0.08 to 15 with torch's own paths 10x apart).
LARGE = 6.0

CONFIGS: tuple[Config, ...] = (
    Config("c0", ModelConfig(src_vocab_size=11, tgt_vocab_size=13, src_seq_len=8, tgt_seq_len=8, d_model=16, N=2,
                             h=2, dropout=DROPOUT, d_ff=32), batch=2, src_len=7, tgt_len=6),
    Config("c1", ModelConfig(src_vocab_size=17, tgt_vocab_size=9, src_seq_len=10, tgt_seq_len=10, d_model=24, N=1,
                             h=4, dropout=DROPOUT, d_ff=48), batch=3, src_len=5, tgt_len=9),
    Config("c2", ModelConfig(src_vocab_size=7, tgt_vocab_size=7, src_seq_len=4, tgt_seq_len=4, d_model=15, N=1,
                             h=3, dropout=DROPOUT, d_ff=20), batch=1, src_len=4, tgt_len=3),  # odd d_model
)


# --------------------------------------------------------------------------------------------------- results
@dataclass
class Outcome:
    """What one component run measured: the verdict, a one-line detail, arrays for the plots."""

    verdict: Verdict
    detail: str = ""
    actual: np.ndarray | None = field(default=None, repr=False)  # [B, L, d]-like, for the error heatmap
    expected: np.ndarray | None = field(default=None, repr=False)
    localization: Localization | None = None
    passed: bool | None = None  # overrides verdict.ok (the full model also needs its localisation clean)
    skipped: bool = False  # an extra the implementation lacks (the detail names it); counts as passed

    @property
    def ok(self) -> bool:
        return self.verdict.ok if self.passed is None else self.passed


@dataclass
class Result:
    """One (component, config, device, dtype) run."""

    component: str
    config: str
    device: str
    dtype: str
    outcome: Outcome | None
    error: str = ""  # the exception text when the run raised
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.outcome is not None and self.outcome.ok

    @property
    def margin(self) -> float:
        return math.inf if self.outcome is None else self.outcome.verdict.margin

    def to_json(self) -> dict[str, Any]:
        v = self.outcome.verdict if self.outcome else None
        loc = self.outcome.localization if self.outcome else None
        return {"component": self.component, "config": self.config, "device": self.device, "dtype": self.dtype,
                "passed": self.passed, "skipped": bool(self.outcome and self.outcome.skipped), "max_abs": _num(v.max_abs) if v else None,
                "max_rel": _num(v.max_rel) if v else None,
                "torch_abs": _num(v.torch_abs) if v and v.torch_abs is not None else None,
                "ratio": _num(v.ratio) if v and v.ratio is not None else None,
                "rule": v.rule if v else None, "tolerance": v.tolerance if v else None,
                "allowed": _num(v.allowed) if v else None, "margin": _num(v.margin) if v else None,
                "detail": self.outcome.detail if self.outcome else self.error,
                "first_divergence": loc.first_divergence if loc else None, "seconds": round(self.seconds, 4)}


def _num(x: float | None) -> float | str | None:
    """JSON has no inf/NaN: write them as strings."""
    if x is None or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


# --------------------------------------------------------------------------------------------------- helpers
@dataclass
class Ctx:
    """Everything a component run needs."""

    impl: ModuleType
    config: Config
    device: str
    dtype: torch.dtype
    seed: int  # per (component, config)
    rng: np.random.Generator

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """A float array rounded to the run's dtype, on its device."""
        return torch.from_numpy(np.asarray(array, dtype=np.float64)).to(device=self.device, dtype=self.dtype)

    def normal(self, *shape: int) -> torch.Tensor:
        return self.tensor(self.rng.standard_normal(shape))

    def build(self, factory: Any, *args: Any) -> nn.Module:
        module = construct(factory, *args, device=self.device, dtype=self.dtype)
        randomize_parameters_(module, self.seed)
        return module.eval()

    def mask(self, kind: str, Lq: int, Lk: int) -> torch.Tensor | None:
        """A contract mask (bool, True = may attend) where every query row keeps a visible key.

        none; causal [1, Lq, Lk] (the blog's causal_mask shape); key_padding [B, 1, 1, Lk]; random [B, h, Lq, Lk];
        padded_causal [B, 1, Lq, Lk] (the blog's decoder mask).
        """
        B, h = self.config.batch, self.config.model.h
        if kind == "none":
            return None
        if kind == "causal":
            m = np.tril(np.ones((Lq, Lk), dtype=bool), k=Lk - Lq)[None]
        elif kind == "key_padding":
            lengths = np.concatenate([[Lk], self.rng.integers(1, Lk + 1, B - 1)])
            m = (np.arange(Lk)[None, :] < lengths[:, None])[:, None, None, :]
        elif kind == "random":
            m = self.rng.random((B, h, Lq, Lk)) < 0.6
            m[..., -1] |= ~m.any(axis=-1)  # keep one key per row
        elif kind == "padded_causal":
            lengths = np.concatenate([[Lk], self.rng.integers(1, Lk + 1, B - 1)])
            m = (np.arange(Lk)[None, :] < lengths[:, None])[:, None, None, :] & np.tril(np.ones((Lq, Lk), bool))
        else:
            raise ValueError(f"unknown mask kind {kind!r}")
        return torch.from_numpy(np.ascontiguousarray(m)).to(self.device)



def _np(x: torch.Tensor | None) -> np.ndarray | None:
    return to_numpy(x)


def _layer_norm_torch(module: nn.Module, eps: float = CONTRACT_EPS) -> nn.LayerNorm:
    """``nn.LayerNorm(eps=eps)`` holding the contract norm's ``alpha``/``bias`` (eps: the kit's, not the module's)."""
    ln = nn.LayerNorm(module.alpha.shape[-1], eps=float(eps), device=module.alpha.device,
                      dtype=module.alpha.dtype)
    with torch.no_grad():
        ln.weight.copy_(module.alpha)
        ln.bias.copy_(module.bias)
    return ln


def _feed_forward_torch(module: nn.Module) -> nn.Sequential:
    l1, l2 = module.linear_1, module.linear_2
    seq = nn.Sequential(nn.Linear(l1.in_features, l1.out_features, device=l1.weight.device, dtype=l1.weight.dtype),
                        nn.ReLU(),
                        nn.Linear(l2.in_features, l2.out_features, device=l2.weight.device, dtype=l2.weight.dtype))
    with torch.no_grad():
        for dst, src in ((seq[0], l1), (seq[2], l2)):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return seq


# --------------------------------------------------------------------------------------------------- components
def run_embedding(c: Ctx) -> Outcome:
    m = c.config.model
    module = c.build(c.impl.InputEmbeddings, m.d_model, m.src_vocab_size)
    tokens = torch.from_numpy(c.rng.integers(0, m.src_vocab_size, (c.config.batch, c.config.src_len))).to(c.device)
    with torch.no_grad():
        out = module(tokens)
        table = module.embedding.weight
        torch_out = nn.functional.embedding(tokens, table) * math.sqrt(m.d_model)
    expected = numpy_ref.embedding(_np(tokens), _np(table))
    return Outcome(judge(out, expected, dtype=c.dtype, torch_out=torch_out, rule="direct"), "", _np(out), expected)


def run_positions(c: Ctx) -> Outcome:
    m = c.config.model
    module = c.build(c.impl.PositionalEncoding, m.d_model, m.src_seq_len, DROPOUT)
    x = c.normal(c.config.batch, c.config.src_len, m.d_model)
    with torch.no_grad():
        out = module(x)
    expected = numpy_ref.positional_encoding(_np(x))
    return Outcome(judge(out, expected, dtype=c.dtype, rule="direct"), "no torch module: direct rule",
                   _np(out), expected)


def run_layer_norm(c: Ctx) -> Outcome:
    m = c.config.model
    module = c.build(c.impl.LayerNormalization, m.d_model)
    x = c.tensor(c.rng.standard_normal((c.config.batch, c.config.src_len, m.d_model)) * 3 + 2)
    with torch.no_grad():
        out = module(x)
        torch_out = _layer_norm_torch(module)(x)
    expected = numpy_ref.layer_norm(_np(x), _np(module.alpha), _np(module.bias), CONTRACT_EPS)
    return Outcome(judge(out, expected, dtype=c.dtype, torch_out=torch_out,
                         sensitivity=_layer_norm_sensitivity(module, x, c.dtype)), "vs nn.LayerNorm", _np(out),
                   expected)


def _layer_norm_sensitivity(module: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    """The LayerNorm oracle's sensitivity to one rounding in ``dtype`` of x, alpha and bias (lazy)."""
    def oracle() -> np.ndarray:
        return numpy_ref.layer_norm(to_numpy(x), to_numpy(module.alpha), to_numpy(module.bias), CONTRACT_EPS)
    return lambda: conditioning.sensitivity(oracle, conditioning.unit_roundoff(dtype))


def run_layer_norm_offset(c: Ctx) -> Outcome:
    """Rows at a common offset of 1e4 (noise 1): a one-pass E[x^2] - E[x]^2 variance cancels in float32."""
    m = c.config.model
    module = c.build(c.impl.LayerNormalization, m.d_model)
    x = c.tensor(c.rng.standard_normal((c.config.batch, c.config.src_len, m.d_model)) + 1e4)
    with torch.no_grad():
        out = module(x)
        torch_out = _layer_norm_torch(module)(x)
    expected = numpy_ref.layer_norm(_np(x), _np(module.alpha), _np(module.bias), CONTRACT_EPS)
    return Outcome(judge(out, expected, dtype=c.dtype, torch_out=torch_out,
                         sensitivity=_layer_norm_sensitivity(module, x, c.dtype)), "offset 1e4; vs nn.LayerNorm",
                   _np(out), expected)


def run_feed_forward(c: Ctx) -> Outcome:
    m = c.config.model
    module = c.build(c.impl.FeedForwardBlock, m.d_model, m.d_ff, DROPOUT)
    x = c.normal(c.config.batch, c.config.src_len, m.d_model)
    with torch.no_grad():
        out = module(x)
        torch_out = _feed_forward_torch(module)(x)
    expected = numpy_ref.feed_forward(_np(x), extract_weights(module))
    return Outcome(judge(out, expected, dtype=c.dtype, torch_out=torch_out), "vs nn.Linear/ReLU/nn.Linear",
                   _np(out), expected)


def make_run_mha(kind: str) -> Callable[[Ctx], Outcome]:
    """Self-attention (q = k = v) with a mask of ``kind``; ``cross``: Lq = Lt queries over Lk = Ls keys, with
    distinct key and value inputs and a key padding mask; ``large``: inputs ``LARGE`` x, scores in the hundreds
    (a softmax without the max subtraction overflows in float32), causal mask."""
    def run(c: Ctx) -> Outcome:
        m = c.config.model
        module = c.build(c.impl.MultiHeadAttentionBlock, m.d_model, m.h, DROPOUT)
        Lq = c.config.tgt_len
        Lk = c.config.src_len if kind == "cross" else Lq
        q = c.tensor(c.rng.standard_normal((c.config.batch, Lq, m.d_model)) * (LARGE if kind == "large" else 1.0))
        k, v = (c.normal(c.config.batch, Lk, m.d_model), c.normal(c.config.batch, Lk, m.d_model)) \
            if kind == "cross" else (q, q)
        mask = c.mask({"cross": "key_padding", "large": "causal"}.get(kind, kind), Lq, Lk)
        with torch.no_grad():
            out = module(q, k, v, mask)
            torch_out = torch_adapters.mha_forward(torch_adapters.to_multihead_attention(module, h=m.h).eval(), q, k,
                                                   v, mask)
        expected, weights = numpy_ref.multi_head_attention(_np(q), _np(k), _np(v), _np(mask), extract_weights(module),
                                                            m.h)
        v_out = judge(out, expected, dtype=c.dtype, torch_out=torch_out)
        detail = "vs nn.MultiheadAttention"
        scores = getattr(module, "attention_scores", None)
        if isinstance(scores, torch.Tensor) and tuple(scores.shape) == weights.shape:
            detail += f"; attention_scores max abs error {error_stats(scores, weights).max_abs:.2e}"
        return Outcome(v_out, detail, _np(out), expected)
    return run


def _skip(reason: str) -> Outcome:
    return Outcome(Verdict(0.0, 0.0, 0.0, None, "skip", "-", 0.0, 0.0, True), reason, skipped=True)


def run_causal_mask(c: Ctx) -> Outcome:
    """``causal_mask(size)`` against ``tril(ones(1, size, size))``: exact (bool)."""
    if missing_extras(c.impl, "causal_mask"):
        return _skip("skipped: implementation lacks causal_mask")
    size = c.config.tgt_len
    got = c.impl.causal_mask(size)
    expected = np.tril(np.ones((1, size, size), dtype=bool))
    v = judge(torch.as_tensor(got).to(torch.float64), expected.astype(np.float64), dtype=torch.float64,
              rule="direct")
    dtype_ok = torch.as_tensor(got).dtype == torch.bool
    return Outcome(v, "exact bool" + ("" if dtype_ok else f"; returned {torch.as_tensor(got).dtype}, not bool"),
                   passed=v.ok and dtype_ok)


def run_padding_mask(c: Ctx) -> Outcome:
    """``padding_mask(tokens, pad_id)`` against ``(tokens != pad_id)[:, None, None, :]``: exact (bool)."""
    if missing_extras(c.impl, "padding_mask"):
        return _skip("skipped: implementation lacks padding_mask")
    vocab, pad = c.config.model.src_vocab_size, 0
    tokens = torch.from_numpy(c.rng.integers(0, vocab, (c.config.batch, c.config.src_len))).to(c.device)
    tokens[:, -1] = pad
    got = c.impl.padding_mask(tokens, pad)
    expected = (_np(tokens) != pad)[:, None, None, :]
    v = judge(torch.as_tensor(got).to(torch.float64), expected.astype(np.float64), dtype=torch.float64,
              rule="direct")
    dtype_ok = torch.as_tensor(got).dtype == torch.bool
    return Outcome(v, "exact bool" + ("" if dtype_ok else f"; returned {torch.as_tensor(got).dtype}, not bool"),
                   passed=v.ok and dtype_ok)


def run_encoder_block(c: Ctx) -> Outcome:
    m = c.config.model
    module = c.build(c.impl.EncoderBlock, m.d_model, c.build(c.impl.MultiHeadAttentionBlock, m.d_model, m.h, DROPOUT),
                     c.build(c.impl.FeedForwardBlock, m.d_model, m.d_ff, DROPOUT), DROPOUT)
    x = c.normal(c.config.batch, c.config.src_len, m.d_model)
    mask = c.mask("key_padding", c.config.src_len, c.config.src_len)
    with torch.no_grad():
        out = module(x, mask)
        torch_out = torch_adapters.encoder_forward(torch_adapters.to_encoder_layer(module, h=m.h).eval(), x, mask)
    expected = numpy_ref.encoder_block(_np(x), _np(mask), extract_weights(module), m.h, CONTRACT_EPS)
    return Outcome(judge(out, expected, dtype=c.dtype, torch_out=torch_out), "vs nn.TransformerEncoderLayer",
                   _np(out), expected)


def run_decoder_block(c: Ctx) -> Outcome:
    m = c.config.model
    module = c.build(c.impl.DecoderBlock, m.d_model, c.build(c.impl.MultiHeadAttentionBlock, m.d_model, m.h, DROPOUT),
                     c.build(c.impl.MultiHeadAttentionBlock, m.d_model, m.h, DROPOUT),
                     c.build(c.impl.FeedForwardBlock, m.d_model, m.d_ff, DROPOUT), DROPOUT)
    Ls, Lt = c.config.src_len, c.config.tgt_len
    x, memory = c.normal(c.config.batch, Lt, m.d_model), c.normal(c.config.batch, Ls, m.d_model)
    src_mask, tgt_mask = c.mask("key_padding", Lt, Ls), c.mask("padded_causal", Lt, Lt)
    with torch.no_grad():
        out = module(x, memory, src_mask, tgt_mask)
        torch_out = torch_adapters.decoder_forward(torch_adapters.to_decoder_layer(module, h=m.h).eval(), x, memory,
                                                   src_mask, tgt_mask)
    expected = numpy_ref.decoder_block(_np(x), _np(memory), _np(src_mask), _np(tgt_mask), extract_weights(module),
                                       m.h, CONTRACT_EPS)
    return Outcome(judge(out, expected, dtype=c.dtype, torch_out=torch_out), "vs nn.TransformerDecoderLayer",
                   _np(out), expected)


def _model(c: Ctx) -> nn.Module:
    model = build_model(c.impl, c.config.model, device=c.device, dtype=c.dtype)
    randomize_parameters_(model, c.seed)
    return model.eval()


def run_encoder(c: Ctx) -> Outcome:
    m = c.config.model
    model = _model(c)
    x = c.normal(c.config.batch, c.config.src_len, m.d_model)
    mask = c.mask("key_padding", c.config.src_len, c.config.src_len)
    with torch.no_grad():
        out = model.encoder(x, mask)
        torch_out = torch_adapters.encoder_forward(torch_adapters.to_encoder(model.encoder, h=m.h).eval(), x, mask)
    expected = numpy_ref.encoder(_np(x), _np(mask), numpy_ref.sub(extract_weights(model), "encoder"), m.h,
                                 CONTRACT_EPS)
    return Outcome(judge(out, expected, dtype=c.dtype, torch_out=torch_out), "vs nn.TransformerEncoder",
                   _np(out), expected)


def run_decoder(c: Ctx) -> Outcome:
    m = c.config.model
    model = _model(c)
    Ls, Lt = c.config.src_len, c.config.tgt_len
    x, memory = c.normal(c.config.batch, Lt, m.d_model), c.normal(c.config.batch, Ls, m.d_model)
    src_mask, tgt_mask = c.mask("key_padding", Lt, Ls), c.mask("padded_causal", Lt, Lt)
    with torch.no_grad():
        out = model.decoder(x, memory, src_mask, tgt_mask)
        torch_out = torch_adapters.decoder_forward(torch_adapters.to_decoder(model.decoder, h=m.h).eval(), x, memory,
                                                   src_mask, tgt_mask)
    expected = numpy_ref.decoder(_np(x), _np(memory), _np(src_mask), _np(tgt_mask),
                                 numpy_ref.sub(extract_weights(model), "decoder"), m.h, CONTRACT_EPS)
    return Outcome(judge(out, expected, dtype=c.dtype, torch_out=torch_out), "vs nn.TransformerDecoder",
                   _np(out), expected)


def run_transformer(c: Ctx) -> Outcome:
    """The full model (source padding, causal and padded target mask), localised path by path."""
    model = _model(c)
    case = random_case(c.config.model, batch=c.config.batch, src_len=c.config.src_len, tgt_len=c.config.tgt_len,
                       seed=c.seed, device=c.device)
    loc = localize(model, case.src, case.tgt, case.src_mask, case.tgt_mask, h=c.config.model.h, dtype=c.dtype)
    raised = next((r for r in loc.rows if r.note.startswith("raised ")), None)
    if raised is not None:
        v = Verdict(math.inf, math.inf, 0.0, None, "shape", "must run", 0.0, math.inf, False,
                    note=f"{raised.path} {raised.note}")
        return Outcome(v, f"first divergence: {loc.first_divergence}", localization=loc, passed=False)
    with torch.no_grad():
        out = model.project(model.decode(model.encode(case.src, case.src_mask), case.src_mask, case.tgt,
                                         case.tgt_mask))
        ref = torch_adapters.TorchTransformerModel(model, h=c.config.model.h).eval()
        torch_out = ref.project(ref.decode(ref.encode(case.src, case.src_mask), case.src_mask, case.tgt,
                                           case.tgt_mask))
    expected = loc.oracle_outputs["projection_layer"]
    v = judge(out, expected, dtype=c.dtype, torch_out=torch_out)
    detail = "vs nn.Transformer; " + ("every submodule within tolerance" if loc.ok
                                      else f"first divergence: {loc.first_divergence}")
    return Outcome(v, detail, _np(out), expected, localization=loc, passed=v.ok and loc.ok)


# ----------------------------------------------------------------------------------------------- gradients
def _cotangent(c: Ctx, shape: tuple[int, ...]) -> np.ndarray:
    """A random output cotangent, already rounded to the run's dtype (so the float64 reference sees the same one)."""
    return to_numpy(c.tensor(c.rng.standard_normal(shape)))


def _grads(module: nn.Module, run: Callable[[], torch.Tensor], cot: np.ndarray, inputs: dict[str, torch.Tensor]
           ) -> dict[str, torch.Tensor | None]:
    """d(sum(out * cot))/d(inputs and parameters), keyed by "input:<name>" and parameter name."""
    module.zero_grad(set_to_none=True)
    for x in inputs.values():
        x.grad = None
    out = run()
    (out * torch.from_numpy(cot).to(out)).sum().backward()
    grads: dict[str, torch.Tensor | None] = {f"input:{k}": x.grad for k, x in inputs.items()}
    grads.update({name: p.grad for name, p in module.named_parameters()})
    return grads


def _judge_grads(c: Ctx, impl_g: dict, ref64: dict, ref_low: dict | None) -> Outcome:
    """The worst of the per-tensor verdicts (direct GRAD_TOL in float64, error ratio below)."""
    worst: tuple[str, Verdict] | None = None
    missing = []
    for name, expected in ref64.items():
        actual = impl_g.get(name)
        if expected is None:
            continue
        if actual is None:
            missing.append(name)
            continue
        v = judge(actual, expected, dtype=c.dtype, grad=True, torch_out=None if ref_low is None else ref_low.get(name))
        if worst is None or v.margin > worst[1].margin:
            worst = (name, v)
    if missing:
        v = Verdict(math.inf, math.inf, 0.0, None, "shape", "every gradient must exist", 0.0, math.inf, False,
                    note=f"no gradient for {', '.join(missing)}")
        return Outcome(v, v.note)
    assert worst is not None
    if c.dtype in (torch.float16, torch.bfloat16) and ref_low is not None:
        # 16 bits: a ReLU pre-activation within one rounding of 0 flips its gate and moves a whole row of a
        # gradient, so max-abs measures which run flipped more gates; judge the relative L2 error of all gradients
        # together, by the error-ratio rule (compare.assert_l2_error_ratio, docs/tolerances.md).
        names = [n for n, e in ref64.items() if e is not None]
        impl_l2 = relative_l2_error(torch.cat([to_f64(impl_g[n]).reshape(-1) for n in names]),
                                    torch.cat([to_f64(ref64[n]).reshape(-1) for n in names]))
        torch_l2 = relative_l2_error(torch.cat([to_f64(ref_low[n]).reshape(-1) for n in names]),
                                     torch.cat([to_f64(ref64[n]).reshape(-1) for n in names]))
        allowed = tolerances.allowed_error(c.dtype, torch_l2, 0.0)
        v = Verdict(impl_l2, impl_l2, 1.0, torch_l2, "ratio-l2",
                    f"rel L2: {tolerances.K:g} x {torch_l2:.2e} + {tolerances.floor(c.dtype, 0.0):.2e}", allowed,
                    impl_l2 / allowed, impl_l2 <= allowed)
        return Outcome(v, f"relative L2 error of all {len(names)} gradients vs torch float64 (max abs "
                          f"{worst[1].max_abs:.2e} at d/d {worst[0]})")
    return Outcome(worst[1], f"worst gradient: d/d {worst[0]} ({len(ref64)} tensors) vs torch float64")


def _grad_case(c: Ctx, module: nn.Module, torch_of: Callable[[nn.Module], nn.Module],
               call: Callable[[nn.Module, dict], torch.Tensor], inputs: dict[str, torch.Tensor],
               names: Callable[[nn.Module], dict[str, torch.Tensor | None]],
               module64: nn.Module | None = None) -> Outcome:
    """Gradients of the implementation vs torch's module in float64 (the oracle) and in the run's dtype.

    The float64 torch module is ``torch_of(module64)`` when given (a float64 build holding the same weights), else
    ``torch_of(module)`` cast to float64 (exact: the weights are already rounded to the run's dtype).
    """
    leaves = {k: x.detach().clone().requires_grad_(True) for k, x in inputs.items()}
    with torch.no_grad():
        out_shape = tuple(call(module, leaves).shape)
    cot = _cotangent(c, out_shape)
    impl_g = _grads(module, lambda: call(module, leaves), cot, leaves)

    def torch_grads(ref: nn.Module, dtype: torch.dtype) -> dict:
        ref.train()
        xs = {k: x.detach().to(dtype).clone().requires_grad_(True) for k, x in inputs.items()}
        g = _grads(ref, lambda: call(ref, xs), cot, xs)
        out = {k: v for k, v in g.items() if k.startswith("input:")}
        out.update(names(ref))
        return out

    ref64 = torch_grads(torch_of(module64) if module64 is not None else torch_of(module).to(torch.float64),
                        torch.float64)
    ref_low = None if c.dtype == torch.float64 else torch_grads(torch_of(module), c.dtype)
    return _judge_grads(c, impl_g, ref64, ref_low)


def run_grad_layer_norm(c: Ctx) -> Outcome:
    m = c.config.model
    module = c.build(c.impl.LayerNormalization, m.d_model)
    x = c.normal(c.config.batch, c.config.src_len, m.d_model)

    def names(ln: nn.Module) -> dict:
        return {"alpha": ln.weight.grad, "bias": ln.bias.grad}

    return _grad_case(c, module, _layer_norm_torch, lambda mod, xs: mod(xs["x"]), {"x": x}, names)


def run_grad_feed_forward(c: Ctx) -> Outcome:
    m = c.config.model
    module = c.build(c.impl.FeedForwardBlock, m.d_model, m.d_ff, DROPOUT)
    x = c.normal(c.config.batch, c.config.src_len, m.d_model)

    def names(seq: nn.Module) -> dict:
        return {"linear_1.weight": seq[0].weight.grad, "linear_1.bias": seq[0].bias.grad,
                "linear_2.weight": seq[2].weight.grad, "linear_2.bias": seq[2].bias.grad}

    return _grad_case(c, module, _feed_forward_torch, lambda mod, xs: mod(xs["x"]), {"x": x}, names)


def run_grad_mha(c: Ctx) -> Outcome:
    """Cross-attention (q and k/v distinct inputs) with a key padding mask."""
    m = c.config.model
    module = c.build(c.impl.MultiHeadAttentionBlock, m.d_model, m.h, DROPOUT)
    Lq, Lk = c.config.tgt_len, c.config.src_len
    inputs = {"q": c.normal(c.config.batch, Lq, m.d_model), "kv": c.normal(c.config.batch, Lk, m.d_model)}
    mask = c.mask("key_padding", Lq, Lk)

    def call(mod: nn.Module, xs: dict) -> torch.Tensor:
        if isinstance(mod, nn.MultiheadAttention):
            return torch_adapters.mha_forward(mod, xs["q"], xs["kv"], xs["kv"], mask)
        return mod(xs["q"], xs["kv"], xs["kv"], mask)

    return _grad_case(c, module, lambda mod: torch_adapters.to_multihead_attention(mod, h=m.h), call, inputs,
                      torch_adapters.grads_by_contract_name)


#: 16-bit full-model gradients are judged on the median of this many seeds (docs/tolerances.md): in a small model
#: one ReLU gate flipped by rounding can carry 14% of the gradient's L2 norm, so a single seed is a lottery
#: (impl/torch ratios 0.3-46 over 12 seeds, median 1.0).
GRAD_16BIT_SEEDS = 5


def run_grad_transformer(c: Ctx) -> Outcome:
    """The full model's parameter gradients vs ``nn.Transformer``; in 16 bits the median of several seeds."""
    if c.dtype not in (torch.float16, torch.bfloat16):
        return _grad_transformer_once(c)
    outcomes = []
    for i in range(GRAD_16BIT_SEEDS):
        seed = c.seed + 7919 * i
        outcomes.append(_grad_transformer_once(replace(c, seed=seed, rng=np.random.default_rng(seed))))
    outcomes.sort(key=lambda o: o.verdict.margin)
    median = outcomes[len(outcomes) // 2]
    margins = ", ".join(f"{o.verdict.margin:.2f}" for o in outcomes)
    return replace(median, detail=f"{median.detail}; median of {GRAD_16BIT_SEEDS} seeds (tolerance used: {margins})")


def _grad_transformer_once(c: Ctx) -> Outcome:
    model = _model(c)
    model64 = build_model(c.impl, c.config.model, device=c.device, dtype=torch.float64)
    with torch.no_grad():
        for (name64, p64), (name, p) in zip(model64.named_parameters(), model.named_parameters()):
            assert name64 == name, (name64, name)
            p64.copy_(p)  # the run's (rounded) weights, exactly, in float64
    case = random_case(c.config.model, batch=c.config.batch, src_len=c.config.src_len, tgt_len=c.config.tgt_len,
                       seed=c.seed, device=c.device)

    def call(mod: nn.Module, xs: dict) -> torch.Tensor:
        return mod.project(mod.decode(mod.encode(case.src, case.src_mask), case.src_mask, case.tgt, case.tgt_mask))

    return _grad_case(c, model, lambda mod: torch_adapters.TorchTransformerModel(mod, h=c.config.model.h), call, {},
                      torch_adapters.grads_by_contract_name, module64=model64)


#: Every component of the sweep, in the order of the table.
COMPONENTS: dict[str, Callable[[Ctx], Outcome]] = {
    "masks/causal": run_causal_mask,
    "masks/padding": run_padding_mask,
    "embedding": run_embedding,
    "positions": run_positions,
    "layer_norm": run_layer_norm,
    "layer_norm/offset": run_layer_norm_offset,
    "feed_forward": run_feed_forward,
    **{f"mha/{kind}": make_run_mha(kind) for kind in ("none", "causal", "key_padding", "random", "cross", "large")},
    "encoder_block": run_encoder_block,
    "decoder_block": run_decoder_block,
    "encoder": run_encoder,
    "decoder": run_decoder,
    "transformer": run_transformer,
    "grad/layer_norm": run_grad_layer_norm,
    "grad/feed_forward": run_grad_feed_forward,
    "grad/mha": run_grad_mha,
    "grad/transformer": run_grad_transformer,
}


#: The contract clauses each component of the sweep checks (with the dtype's ``numerics.*`` clause added per run):
#: the report's conformance card (``--json``: ``card``; the end of the console output).
COMPONENT_CLAUSES: dict[str, tuple[str, ...]] = {
    "masks/causal": ("extra.mask-helpers",), "masks/padding": ("extra.mask-helpers",),
    "embedding": ("embed.scaled-lookup",), "positions": ("pe.formula", "pe.add"),
    "layer_norm": ("ln.biased-variance",), "layer_norm/offset": ("ln.biased-variance",),
    "feed_forward": ("ffn.formula",), "mha/none": ("mha.formula", "mha.static-attention"),
    **{f"mha/{k}": ("mha.formula", "mask.semantics", "mask.zero-weight") for k in ("causal", "key_padding", "random")},
    "mha/cross": ("mha.formula",), "mha/large": ("mha.formula",),
    "encoder_block": ("encoder.block", "residual.pre-norm"), "decoder_block": ("decoder.block", "residual.pre-norm"),
    "encoder": ("encoder.stack",), "decoder": ("decoder.stack",),
    "transformer": ("transformer.compose", "projection.logits"),
    "grad/layer_norm": ("ln.biased-variance",), "grad/feed_forward": ("ffn.formula",), "grad/mha": ("mha.formula",),
    "grad/transformer": ("transformer.compose",),
}
NUMERICS = {"float64": "numerics.float64", "float32": "numerics.float32", "float16": "numerics.low-precision",
            "bfloat16": "numerics.low-precision"}


def select_components(patterns: Sequence[str] | None) -> list[str]:
    """Component names matching any pattern, in table order: an exact name selects just that component; otherwise a
    family prefix (``mha`` -> ``mha/*``) or a glob (``grad/*``)."""
    if not patterns:
        return list(COMPONENTS)

    def matches(name: str, p: str) -> bool:
        if p in COMPONENTS:
            return name == p
        return name.startswith(p.rstrip("/") + "/") or fnmatch.fnmatch(name, p)

    chosen = [name for name in COMPONENTS if any(matches(name, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"no component matches {', '.join(patterns)}; known: {', '.join(COMPONENTS)}")
    return chosen


def case_seed(seed: int, component: str, config: Config) -> int:
    """A reproducible per-run seed from the global ``--seed``, the component and the config."""
    return (seed * 1_000_003 + zlib.crc32(f"{component}/{config.name}".encode())) % (2**31)


def run_one(impl: ModuleType, component: str, config: Config, device: str, dtype: torch.dtype,
            seed: int) -> Result:
    """One component run; an exception becomes a FAIL result carrying its text."""
    s = case_seed(seed, component, config)
    ctx = Ctx(impl, config, device, dtype, s, np.random.default_rng(s))
    start = time.perf_counter()
    try:
        outcome, error = COMPONENTS[component](ctx), ""
    except Exception as exc:  # a broken implementation may raise anywhere: that is a FAIL, not a crash
        outcome, error = None, f"raised {type(exc).__name__}: {exc}"
    return Result(component, config.name, device, _dtype_name(dtype), outcome, error,
                  time.perf_counter() - start)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# --------------------------------------------------------------------------------------------------- sweep
@dataclass
class Report:
    """All results of one sweep, and how to reproduce each."""

    impl: str
    seed: int
    devices: list[str]
    dtypes: dict[str, list[str]]  # device -> dtype names
    components: list[str]
    results: list[Result]
    elapsed: float = 0.0
    diagnosis: Diagnosis | None = None  # the API diagnosis of the implementation (its deviations go on the card)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def localizations(self) -> list[tuple[Result, Localization]]:
        return [(r, r.outcome.localization) for r in self.results if r.outcome and r.outcome.localization]

    @property
    def first_divergence(self) -> str | None:
        return next((loc.first_divergence for _, loc in self.localizations if not loc.ok), None)

    def rows(self) -> list[list[Result]]:
        """Results grouped by (component, device, dtype), in sweep order."""
        groups: dict[tuple[str, str, str], list[Result]] = {}
        for r in self.results:
            groups.setdefault((r.component, r.device, r.dtype), []).append(r)
        return list(groups.values())

    def command(self, component: str, device: str, dtype: str) -> str:
        """The command line that reproduces one row."""
        return (f"python -m reference.report --impl {shlex.quote(self.impl)} --component {component} "
                f"--device {device} --dtype {dtype} --seed {self.seed}")

    def card(self) -> Card:
        """The conformance card of this sweep: each run counted against its component's clauses and its dtype's
        ``numerics.*`` clause, plus the API diagnosis's deviations (``reference.card``)."""
        card = Card(self.impl)
        for f in self.diagnosis.findings if self.diagnosis else ():
            card.deviation(f.clause, f.message)
        for r in self.results:
            clauses = COMPONENT_CLAUSES.get(r.component, ()) + (NUMERICS[r.dtype],)
            where = f"{r.component} ({r.device}, {r.dtype}, config {r.config})"
            if r.outcome is not None and r.outcome.skipped:
                card.add(clauses, where, "skipped", r.outcome.detail)
            elif r.passed:
                card.add(clauses, where, "passed")
            else:
                v = r.outcome.verdict if r.outcome else None
                card.add(clauses, where, "failed", r.error or (v.line() if v else ""))
        return card

    def to_json(self) -> dict[str, Any]:
        rows = []
        for group in self.rows():
            worst = max(group, key=lambda r: (not r.passed, r.margin))
            rows.append({**worst.to_json(), "config": worst.config, "configs": [r.config for r in group],
                         "passed": all(r.passed for r in group),
                         "command": self.command(worst.component, worst.device, worst.dtype)})
        return jsonable({"schema": SCHEMA, "impl": self.impl, "seed": self.seed, "passed": self.passed,
                "first_divergence": self.first_divergence, "torch": torch.__version__,
                "python": platform.python_version(), "devices": self.devices, "dtypes": self.dtypes,
                "components": self.components, "configs": {c.name: c.text() for c in CONFIGS},
                "elapsed_s": round(self.elapsed, 3), "rows": rows, "results": [r.to_json() for r in self.results],
                "localization": [{"component": r.component, "config": r.config, **loc.to_json()}
                                 for r, loc in self.localizations],
                "card": [row for row in self.card().rows() if row["status"] != "not run"]})


def available_devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def default_dtypes(device: str) -> list[str]:
    """float64 and float32 everywhere; float16 and bfloat16 too on CUDA."""
    return ["float64", "float32"] + (["float16", "bfloat16"] if device == "cuda" else [])


def sweep(impl_name: str, *, components: Sequence[str], devices: Sequence[str], dtypes: dict[str, list[str]],
          seed: int, configs: Sequence[Config] = CONFIGS, progress: Callable[[str], None] | None = None,
          impl_map: str | Path | None = None) -> Report:
    """Run every selected component x config x device x dtype (on ``impl_name`` seen through ``impl_map``)."""
    impl = load_impl(impl_name, impl_map)
    start = time.perf_counter()
    results = []
    for device in devices:
        for dtype_name in dtypes[device]:
            for component in components:
                for config in configs:
                    if progress:
                        progress(f"{component} {config.name} {device} {dtype_name}")
                    results.append(run_one(impl, component, config, device, DTYPES[dtype_name], seed))
    return Report(impl_name, seed, list(devices), dict(dtypes), list(components), results,
                  time.perf_counter() - start, contract.diagnosis_of(impl_name, impl_map))


# --------------------------------------------------------------------------------------------------- output
def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    return "inf" if math.isinf(x) else f"{x:.2e}"


def render(report: Report, console: Any) -> None:
    """The table, then one block per FAIL row: what failed, the localisation, the command that reproduces it."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Equivalence report: {report.impl} vs float64 NumPy oracle and torch (seed {report.seed})",
                  title_justify="left")
    for name, justify in (("component", "left"), ("device", "left"), ("dtype", "left"), ("max abs", "right"),
                          ("max rel", "right"), ("impl/torch", "right"), ("tolerance", "left"),
                          ("result", "left"), ("worst", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    failed = []
    for group in report.rows():
        worst = max(group, key=lambda r: (not r.passed, r.margin))
        ok = all(r.passed for r in group)
        v = worst.outcome.verdict if worst.outcome else None
        ratio = v.ratio if v else None
        if worst.outcome is not None and worst.outcome.skipped:
            table.add_row(worst.component, worst.device, worst.dtype, "-", "-", "-", worst.outcome.detail,
                          "[yellow]SKIP[/]", "-")
            continue
        table.add_row(worst.component, worst.device, worst.dtype, _fmt(v.max_abs if v else None),
                      _fmt(v.max_rel if v else None), "-" if ratio is None else f"{ratio:.2f}",
                      v.tolerance if v else "-", "[green]PASS[/]" if ok else "[bold red]FAIL[/]", worst.config)
        if not ok:
            failed.append(worst)
    console.print(table)
    for r in failed:  # soft_wrap: long lines stay whole, so the commands can be copied
        v = r.outcome.verdict if r.outcome else None
        console.print(f"[bold red]FAIL[/] {r.component} ({r.device}, {r.dtype}, config {r.config}): "
                      + escape(r.error or f"{v.line()}; {r.outcome.detail}"), highlight=False,
                      soft_wrap=True)
        loc = r.outcome.localization if r.outcome else None
        if loc is not None and not loc.ok:
            console.print(loc.summary(), markup=False, highlight=False, soft_wrap=True)
        console.print(f"  reproduce: {report.command(r.component, r.device, r.dtype)}", markup=False,
                      highlight=False, soft_wrap=True)
    n_fail = sum(1 for g in report.rows() if not all(r.passed for r in g))
    summary = (f"{len(report.rows())} rows ({len(report.results)} runs over configs "
               f"{', '.join(c.name for c in CONFIGS)}) in {report.elapsed:.1f} s: ")
    summary += "[bold green]all PASS[/]" if n_fail == 0 else f"[bold red]{n_fail} FAIL[/]"
    if report.first_divergence:
        summary += f"; first divergence: {report.first_divergence}"
    console.print(summary, highlight=False, soft_wrap=True)
    card = report.card()
    lines = card.lines()
    console.print("\n".join([lines[0]] + [ln for ln in lines[1:] if " not run " not in ln]), markup=False,
                  highlight=False, soft_wrap=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reference.report",
                                description="Equivalence report of a contract implementation against the float64 "
                                            "NumPy oracle and torch's own modules; exits 1 on any FAIL.")
    p.add_argument("--impl", default=DEFAULT_IMPL, help="module implementing the contract (default: %(default)s)")
    p.add_argument("--impl-map", type=Path, metavar="FILE",
                   help="TOML map of the implementation's own names onto the contract's (README)")
    p.add_argument("--device", default="all", choices=("cpu", "cuda", "all"),
                   help="device(s) to sweep (default: every available one)")
    p.add_argument("--dtype", action="append", choices=sorted(DTYPES) + ["all"],
                   help="dtype(s), repeatable (default: float64 and float32; plus float16, bfloat16 on CUDA)")
    p.add_argument("--component", action="append",
                   help=f"component(s), repeatable: a name, a family (mha, grad) or a glob; known: "
                        f"{', '.join(COMPONENTS)}")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and masks (default: %(default)s)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON (docs/report.md)")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots (needs matplotlib)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: %(default)s; the sweep's tensors are tiny, more threads only "
                        "add contention)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="build every module under torch.compile(backend=BACKEND) (default inductor; also env "
                        "SCRATCH_TRANSFORMER_COMPILE): does compilation change the numbers?")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 all PASS, 1 any FAIL, 2 usage error)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    args = parse_args(argv)
    if args.compile:
        contract.compile_backend = args.compile
    out = Console(width=None if sys.stdout.isatty() else 150)
    err = Console(stderr=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        err.print("--device cuda: CUDA is not available on this machine")
        return 2
    torch.set_num_threads(max(1, args.threads))
    devices = available_devices() if args.device == "all" else [args.device]
    chosen = None if not args.dtype or "all" in args.dtype else list(dict.fromkeys(args.dtype))
    dtypes = {d: (chosen or default_dtypes(d)) for d in devices}
    try:
        components = select_components(args.component)
        load_impl(args.impl, args.impl_map)
    except (ValueError, ImportError) as exc:
        err.print(f"error: {exc}", markup=False)
        return 2
    if args.plots is not None:
        from . import plots
        if not plots.available():
            err.print("--plots needs matplotlib: pip install 'scratch-transformer[plots]'")
            return 2
    total = len(components) * len(CONFIGS) * sum(len(v) for v in dtypes.values())
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=args.no_progress) as bar:
        task = bar.add_task("sweep", total=total)
        first = [True]

        def progress(label: str) -> None:
            if not first[0]:
                bar.advance(task)
            first[0] = False
            bar.update(task, description=label.ljust(40))

        report = sweep(args.impl, components=components, devices=devices, dtypes=dtypes, seed=args.seed,
                       progress=progress, impl_map=args.impl_map)
    render(report, out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n")
        out.print(f"JSON written to {args.json}", highlight=False, soft_wrap=True)
    if args.plots is not None:
        from . import plots
        written = plots.write_all(report, args.plots, impl=load_impl(args.impl, args.impl_map))
        out.print(f"plots written: {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
