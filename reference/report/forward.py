"""The report's forward runs: one function per component row, the implementation against the float64 NumPy oracle
and torch's own module (``torch_adapters``) or kernels (``torch_ref``) on the same inputs and weights.

Rules (``compare.judge``): float64 rows, the embedding and the positional table use the direct rule; float32 and
lower the error-ratio rule against torch's error. LayerNorm rows widen to the conditioning bound in float32/float64.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from reference.judge import conditioning, precision
from reference.oracles import numpy_ref, torch_adapters, torch_ref
from reference.kit.components import COMPONENTS
from reference.judge.compare import Verdict, error_stats, judge
from reference.spec.contract import missing_extras
from reference.report.localize import localize
from reference.kit.weights import CONTRACT_EPS, extract_weights, to_numpy
from .cases import LARGE, Ctx, Outcome, skip

_np = to_numpy


def _plotted(out: object) -> np.ndarray | None:
    """The implementation's output as an array for the plots; None when it is no Tensor (the verdict says what)."""
    return _np(out) if isinstance(out, torch.Tensor) else None


def _judge(c: Ctx, name: str, out: torch.Tensor, expected: np.ndarray, *, dtype: torch.dtype | None = None,
           **kw: Any) -> Verdict:
    """``compare.judge`` in ``dtype`` (default the run's) by component ``name``'s tolerance rule (the registry's)."""
    return judge(out, expected, dtype=dtype or c.dtype, rule=COMPONENTS[name].rule, **kw)


def _diagnosed(c: Ctx, outcome: Outcome, module: Any, inputs: tuple, torch_out: torch.Tensor, *,
               torch_call: Callable[..., torch.Tensor], call: Callable[..., Any] | None = None) -> Outcome:
    """``outcome``, its detail followed by the 16-bit differential diagnosis (``reference.judge.precision``) where a
    float16/bfloat16 row fails its rule: the same module re-run in float32, formula or arithmetic."""
    if outcome.verdict.ok or not precision.is_16bit(c.dtype) or outcome.expected is None:
        return outcome
    text = precision.diagnose(module, inputs, dtype=c.dtype, oracle=outcome.expected, torch_out=torch_out,
                              call=call, torch_call=torch_call)
    outcome.detail = f"{outcome.detail}; {text}" if outcome.detail else text
    return outcome


def run_embedding(c: Ctx) -> Outcome:
    m = c.config.model
    module = c.build("embedding")
    tokens = torch.from_numpy(c.rng.integers(0, m.src_vocab_size, (c.config.batch, c.config.src_len))).to(c.device)
    with torch.no_grad():
        out = module(tokens)
        torch_out = torch_ref.embedding(tokens, module.embedding.weight)
    expected = numpy_ref.embedding(_np(tokens), _np(module.embedding.weight))
    return Outcome(_judge(c, "embedding", out, expected, torch_out=torch_out), "", _plotted(out), expected)


def run_positional_encoding(c: Ctx) -> Outcome:
    module = c.build("positional_encoding")
    x = c.normal(c.config.batch, c.config.src_len, c.config.model.d_model)
    with torch.no_grad():
        out = module(x)
    expected = numpy_ref.positional_encoding(_np(x))
    return Outcome(_judge(c, "positional_encoding", out, expected), "no torch module: direct rule",
                   _plotted(out), expected)


def _layer_norm(c: Ctx, offset: float, noise: float, detail: str) -> Outcome:
    """LayerNorm rows of ``noise * N(0, 1) + offset`` vs ``nn.LayerNorm``; the conditioning bound in f32/f64."""
    module = c.build("layer_norm")
    x = c.tensor(c.rng.standard_normal((c.config.batch, c.config.src_len, c.config.model.d_model)) * noise + offset)
    with torch.no_grad():
        out = module(x)
        torch_out = torch_adapters.to_layer_norm(module)(x)

    def oracle() -> np.ndarray:
        return numpy_ref.layer_norm(_np(x), _np(module.alpha), _np(module.bias), CONTRACT_EPS)

    sensitivity = None
    if c.dtype in (torch.float32, torch.float64):
        sensitivity = lambda: conditioning.sensitivity(oracle, conditioning.unit_roundoff(c.dtype))  # noqa: E731
    expected = oracle()
    return _diagnosed(c, Outcome(_judge(c, "layer_norm", out, expected, torch_out=torch_out, sensitivity=sensitivity),
                                 detail, _plotted(out), expected),
                      module, (x,), torch_out, torch_call=lambda m, a: torch_adapters.to_layer_norm(m)(a))


def run_layer_norm(c: Ctx) -> Outcome:
    return _layer_norm(c, 2.0, 3.0, "vs nn.LayerNorm")


def run_layer_norm_offset(c: Ctx) -> Outcome:
    """Rows at a common offset of 1e4 (noise 1): a one-pass E[x^2] - E[x]^2 variance cancels in float32."""
    return _layer_norm(c, 1e4, 1.0, "offset 1e4; vs nn.LayerNorm")


def run_feed_forward(c: Ctx) -> Outcome:
    module = c.build("feed_forward")
    x = c.normal(c.config.batch, c.config.src_len, c.config.model.d_model)
    with torch.no_grad():
        out = module(x)
        torch_out = torch_adapters.to_feed_forward(module)(x)
    expected = numpy_ref.feed_forward(_np(x), extract_weights(module))
    return _diagnosed(c, Outcome(_judge(c, "feed_forward", out, expected, torch_out=torch_out),
                                 "vs nn.Linear/ReLU/nn.Linear", _plotted(out), expected),
                      module, (x,), torch_out, torch_call=lambda m, a: torch_adapters.to_feed_forward(m)(a))


def make_run_mha(kind: str) -> Callable[[Ctx], Outcome]:
    """Self-attention (q = k = v) with a mask of ``kind``; ``cross``: Lq = Lt queries over Lk = Ls keys, with
    distinct key and value inputs and a key padding mask; ``large``: inputs ``LARGE`` x, scores in the hundreds
    (a softmax without the max subtraction overflows in float32), causal mask."""
    def run(c: Ctx) -> Outcome:
        m = c.config.model
        module = c.build("multi_head_attention")
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
        detail = "vs nn.MultiheadAttention"
        scores = getattr(module, "attention_scores", None)
        if isinstance(scores, torch.Tensor) and tuple(scores.shape) == weights.shape:
            detail += f"; attention_scores max abs error {error_stats(scores, weights).max_abs:.2e}"
        return _diagnosed(c, Outcome(_judge(c, "multi_head_attention", out, expected, torch_out=torch_out), detail,
                                     _plotted(out), expected),
                          module, (q, k, v, mask), torch_out, torch_call=lambda mod, *a: torch_adapters.mha_forward(
                              torch_adapters.to_multihead_attention(mod, h=m.h).eval(), *a))
    return run


def _exact_mask(c: Ctx, name: str, got: object, expected: np.ndarray) -> Outcome:
    """A mask helper's result against the expected bool mask: exact (float64's direct rule on 0/1), and bool."""
    v = _judge(c, name, torch.as_tensor(got).to(torch.float64), expected.astype(np.float64), dtype=torch.float64)
    dtype_ok = torch.as_tensor(got).dtype == torch.bool
    return Outcome(v, "exact bool" + ("" if dtype_ok else f"; returned {torch.as_tensor(got).dtype}, not bool"),
                   passed=v.ok and dtype_ok)


def run_causal_mask(c: Ctx) -> Outcome:
    """``causal_mask(size)`` against ``tril(ones(1, size, size))``: exact (bool)."""
    if missing_extras(c.impl, "causal_mask"):
        return skip("skipped: implementation lacks causal_mask")
    size = c.config.tgt_len
    return _exact_mask(c, "causal_mask", c.impl.causal_mask(size), np.tril(np.ones((1, size, size), dtype=bool)))


def run_padding_mask(c: Ctx) -> Outcome:
    """``padding_mask(tokens, pad_id)`` against ``(tokens != pad_id)[:, None, None, :]``: exact (bool)."""
    if missing_extras(c.impl, "padding_mask"):
        return skip("skipped: implementation lacks padding_mask")
    vocab, pad = c.config.model.src_vocab_size, 0
    tokens = torch.from_numpy(c.rng.integers(0, vocab, (c.config.batch, c.config.src_len))).to(c.device)
    tokens[:, -1] = pad
    return _exact_mask(c, "padding_mask", c.impl.padding_mask(tokens, pad), (_np(tokens) != pad)[:, None, None, :])


def run_encoder_block(c: Ctx) -> Outcome:
    m = c.config.model
    module = c.build("encoder_block")
    x = c.normal(c.config.batch, c.config.src_len, m.d_model)
    mask = c.mask("key_padding", c.config.src_len, c.config.src_len)
    with torch.no_grad():
        out = module(x, mask)
        torch_out = torch_adapters.encoder_forward(torch_adapters.to_encoder_layer(module, h=m.h).eval(), x, mask)
    expected = numpy_ref.encoder_block(_np(x), _np(mask), extract_weights(module), m.h, CONTRACT_EPS)
    return _diagnosed(c, Outcome(_judge(c, "encoder_block", out, expected, torch_out=torch_out),
                                 "vs nn.TransformerEncoderLayer", _plotted(out), expected),
                      module, (x, mask), torch_out, torch_call=lambda mod, *a: torch_adapters.encoder_forward(
                          torch_adapters.to_encoder_layer(mod, h=m.h).eval(), *a))


def _decoder_inputs(c: Ctx) -> tuple[torch.Tensor, ...]:
    """(x [B, Lt, d], memory [B, Ls, d], src_mask key padding, tgt_mask padded causal)."""
    Ls, Lt, d = c.config.src_len, c.config.tgt_len, c.config.model.d_model
    x, memory = c.normal(c.config.batch, Lt, d), c.normal(c.config.batch, Ls, d)
    return x, memory, c.mask("key_padding", Lt, Ls), c.mask("padded_causal", Lt, Lt)


def run_decoder_block(c: Ctx) -> Outcome:
    h = c.config.model.h
    module = c.build("decoder_block")
    x, memory, src_mask, tgt_mask = _decoder_inputs(c)
    with torch.no_grad():
        out = module(x, memory, src_mask, tgt_mask)
        torch_out = torch_adapters.decoder_forward(torch_adapters.to_decoder_layer(module, h=h).eval(), x, memory,
                                                   src_mask, tgt_mask)
    expected = numpy_ref.decoder_block(_np(x), _np(memory), _np(src_mask), _np(tgt_mask), extract_weights(module),
                                       h, CONTRACT_EPS)
    return _diagnosed(c, Outcome(_judge(c, "decoder_block", out, expected, torch_out=torch_out),
                                 "vs nn.TransformerDecoderLayer", _plotted(out), expected),
                      module, (x, memory, src_mask, tgt_mask), torch_out,
                      torch_call=lambda mod, *a: torch_adapters.decoder_forward(
                          torch_adapters.to_decoder_layer(mod, h=h).eval(), *a))


def run_encoder(c: Ctx) -> Outcome:
    m = c.config.model
    model = c.model()
    x = c.normal(c.config.batch, c.config.src_len, m.d_model)
    mask = c.mask("key_padding", c.config.src_len, c.config.src_len)
    with torch.no_grad():
        out = model.encoder(x, mask)
        torch_encoder = torch_adapters.to_encoder(model.encoder, h=m.h, N=m.N, d_ff=m.d_ff).eval()
        torch_out = torch_adapters.encoder_forward(torch_encoder, x, mask)
    expected = numpy_ref.encoder(_np(x), _np(mask), numpy_ref.sub(extract_weights(model), "encoder"), m.h,
                                 CONTRACT_EPS, N=m.N)
    return _diagnosed(c, Outcome(_judge(c, "encoder", out, expected, torch_out=torch_out), "vs nn.TransformerEncoder",
                                 _plotted(out), expected),
                      model.encoder, (x, mask), torch_out, torch_call=lambda mod, *a: torch_adapters.encoder_forward(
                          torch_adapters.to_encoder(mod, h=m.h, N=m.N, d_ff=m.d_ff).eval(), *a))


def run_decoder(c: Ctx) -> Outcome:
    h, m = c.config.model.h, c.config.model
    model = c.model()
    x, memory, src_mask, tgt_mask = _decoder_inputs(c)
    with torch.no_grad():
        out = model.decoder(x, memory, src_mask, tgt_mask)
        torch_decoder = torch_adapters.to_decoder(model.decoder, h=h, N=m.N, d_ff=m.d_ff).eval()
        torch_out = torch_adapters.decoder_forward(torch_decoder, x, memory, src_mask, tgt_mask)
    expected = numpy_ref.decoder(_np(x), _np(memory), _np(src_mask), _np(tgt_mask),
                                 numpy_ref.sub(extract_weights(model), "decoder"), h, CONTRACT_EPS, N=m.N)
    return _diagnosed(c, Outcome(_judge(c, "decoder", out, expected, torch_out=torch_out), "vs nn.TransformerDecoder",
                                 _plotted(out), expected),
                      model.decoder, (x, memory, src_mask, tgt_mask), torch_out,
                      torch_call=lambda mod, *a: torch_adapters.decoder_forward(
                          torch_adapters.to_decoder(mod, h=h, N=m.N, d_ff=m.d_ff).eval(), *a))


def run_transformer(c: Ctx) -> Outcome:
    """The full model (source padding, causal and padded target mask), localised path by path."""
    model = c.model()
    case = c.case()
    m = c.config.model
    loc = localize(model, case.src, case.tgt, case.src_mask, case.tgt_mask, h=m.h, dtype=c.dtype, N=m.N, d_ff=m.d_ff)
    raised = next((r for r in loc.rows if r.note.startswith("raised ")), None)
    if raised is not None:
        v = Verdict(max_abs=math.inf, max_rel=math.inf, rule="shape", tolerance="must run", allowed=0.0,
                    margin=math.inf, ok=False, note=f"{raised.path} {raised.note}")
        return Outcome(v, f"first divergence: {loc.first_divergence}", localization=loc, passed=False)
    with torch.no_grad():
        out = model.project(model.decode(model.encode(case.src, case.src_mask), case.src_mask, case.tgt,
                                         case.tgt_mask))
        ref = torch_adapters.TorchTransformerModel(model, h=m.h, N=m.N, d_ff=m.d_ff).eval()
        torch_out = ref.project(ref.decode(ref.encode(case.src, case.src_mask), case.src_mask, case.tgt,
                                           case.tgt_mask))
    expected = loc.oracle_outputs["projection_layer"]
    v = _judge(c, "transformer", out, expected, torch_out=torch_out)
    detail = "vs nn.Transformer; " + ("every submodule within tolerance" if loc.ok
                                      else f"first divergence: {loc.first_divergence}")
    return _diagnosed(c, Outcome(v, detail, _plotted(out), expected, localization=loc, passed=v.ok and loc.ok),
                      model, (case.src, case.src_mask, case.tgt, case.tgt_mask), torch_out, call=_logits,
                      torch_call=lambda mod, *a: _logits(
                          torch_adapters.TorchTransformerModel(mod, h=m.h, N=m.N, d_ff=m.d_ff).eval(), *a))


def _logits(model: Any, src: torch.Tensor, src_mask: Any, tgt: torch.Tensor, tgt_mask: Any) -> torch.Tensor:
    """``project(decode(encode(src), tgt))`` of the contract model or of ``TorchTransformerModel``."""
    return model.project(model.decode(model.encode(src, src_mask), src_mask, tgt, tgt_mask))
