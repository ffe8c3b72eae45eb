"""The implementation against PyTorch's own modules loaded with the same weights (forward values).

In every dtype the implementation's max error against the float64 NumPy oracle is at most K times the error of
torch's module in the same dtype plus a floor (``assert_error_ratio``; in float64 the floor, 9.1e-13 of the output
scale, is the ~1e-12 bar, and a direct comparison with torch would measure torch's own float64 rounding, up to 5e-11
at a 1e4 offset: docs/tolerances.md). Inputs cover every scale of ``SCALES``; k != v in cross-attention.
Rows whose keys are all masked are left out of value comparisons (torch gives NaN there) but must be finite in the
implementation. Torch's paths: ``nn.MultiheadAttention`` (slow path; fused ``_native_multi_head_attention`` for
self-attention in eval with an even head count), ``F.scaled_dot_product_attention``, the encoder/decoder layers
and stacks (fused ``_transformer_encoder_layer_fwd`` in eval without grad), the nested-tensor encoder path, and
``nn.Transformer`` end to end. Torch's modules and the oracle both compute with the hyper-parameters the test built
the implementation with (``h`` drawn, ``eps`` the contract's ``CONTRACT_EPS``), never with values read back from
it. See docs/tolerances.md and docs/divergences.md.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections import Counter
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from torch import nn

from reference import conditioning, numpy_ref
from reference import torch_adapters as ta
from reference import tolerances
from reference.compare import assert_close, assert_error_ratio, to_f64
from reference.contract import build_model, construct, missing_extras, randomize_parameters_
from reference.weights import CONTRACT_EPS, extract_weights, to_numpy
from tests.strategies import (KEY_PADDING_KINDS, AttentionInputs, DropoutMode, ModelInputs, dense_attention_inputs,
                              dropout_modes, feed_forward_widths, model_inputs)

DTYPES = [pytest.param(torch.float64, id="float64"), pytest.param(torch.float32, id="float32")]
SEEDS = st.integers(0, 2**31 - 1)
LAYERS = st.integers(1, 3)


# --------------------------------------------------------------------------------------------------- helpers
def as_tensor(a: np.ndarray | None, device: str, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def f64(t: torch.Tensor | None) -> np.ndarray | None:
    """The exact float64 values of a (low-precision) tensor, for the NumPy oracle (perturbed inside
    ``reference.conditioning.perturbation``, to measure the oracle's sensitivity)."""
    return None if t is None else to_numpy(t.double())


def assert_float64_close(actual: torch.Tensor, expected: torch.Tensor | np.ndarray, *, component: str,
                         config: dict, where: torch.Tensor | None = None, grad: bool = False,
                         sensitivity: Callable[[], torch.Tensor] | None = None) -> None:
    """float64 direct comparison: ``VALUE_TOL`` (``GRAD_TOL``) with atol raised to ``floor(float64, scale)``, i.e.
    9.1e-13 times the output's scale, when the scale exceeds 1. Elements outside ``where`` are not compared."""
    __tracebackhide__ = True
    a, e = to_f64(actual), to_f64(expected)
    if where is not None:  # torch's NaN rows are out of the comparison: blank them on both sides
        keep = where.expand_as(a).cpu()
        a, e = torch.where(keep, a, torch.zeros_like(a)), torch.where(keep, e, torch.zeros_like(e))
    scale = float(e.abs().max()) if e.numel() else 0.0
    # Rounding follows the output's scale, not each element's size: with inputs up to 1e3 an output element that
    # cancels down to ~10 still carries ~1e-14 of the 1e3 scale (measured up to 6e-14; docs/tolerances.md).
    rtol, atol = (tolerances.grad_tol if grad else tolerances.value_tol)(
        torch.float64, (0.0, tolerances.floor(torch.float64, scale)))
    assert_close(a, e, rtol=rtol, atol=atol, component=component, config=config, grad=grad, where=where,
                 sensitivity=sensitivity)


def apply_policy(actual: torch.Tensor, torch_out: torch.Tensor, oracle: Callable[[], np.ndarray], *,
                 dtype: torch.dtype, component: str, config: dict, where: torch.Tensor | None,
                 label: str) -> None:
    """The error-ratio rule against the float64 oracle in every dtype (docs/tolerances.md):
    ``err(impl) <= K * err(torch) + FLOOR_EPS[dtype] * eps * max(1, scale)``; in float64 the floor is 9.1e-13 of
    the output scale, the ~1e-12 bar, and torch's own float64 error (up to ~5e-11 after a LayerNorm of inputs at
    a 1e4 offset) widens it only where torch itself is that far from the oracle."""
    __tracebackhide__ = True
    sensitivity = None
    if dtype in (torch.float32, torch.float64):  # 16-bit stays on the error ratio alone (numerics.low-precision)
        sensitivity = lambda: conditioning.sensitivity(oracle, conditioning.unit_roundoff(dtype))  # noqa: E731
    impl_err, torch_err = assert_error_ratio(actual, torch_out, oracle(), component=component, dtype=dtype,
                                             config=config, where=where, label=label, sensitivity=sensitivity)
    note(f"{component}: impl err {impl_err.max_abs:.3e}, {label} err {torch_err.max_abs:.3e}")


#: The policy every comparison goes through (``python -m tests.test_equivalence_torch`` swaps in a recorder).
POLICY: Callable[..., None] = apply_policy


def check_forward(actual: torch.Tensor, torch_out: torch.Tensor, oracle: Callable[[], np.ndarray], *,
                  dtype: torch.dtype, component: str, config: dict, where: torch.Tensor | None = None,
                  label: str = "torch") -> None:
    """Finite everywhere (fully masked rows included), then the tolerance policy on the rows torch defines."""
    __tracebackhide__ = True
    bad = ~torch.isfinite(actual)
    assert not bad.any(), f"{component} {config}: {int(bad.sum())} non-finite outputs (fully masked rows included)"
    where = None if where is None else where.expand_as(actual).cpu()
    POLICY(actual, torch_out, oracle, dtype=dtype, component=component, config=config, where=where, label=label)


def set_mode(modules: list[nn.Module], mode: DropoutMode) -> None:
    for m in modules:
        m.train(mode.train)


@contextlib.contextmanager
def counting(*names: str) -> Iterator[Counter]:
    """Count calls of ``torch.<name>`` (torch's fused kernels) inside the block."""
    counts: Counter = Counter()
    originals = {name: getattr(torch, name) for name in names}

    def wrap(name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return fn(*args, **kwargs)
        return counted

    try:
        for name in names:
            setattr(torch, name, wrap(name, originals[name]))
        yield counts
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)


# --------------------------------------------------------------------------------------------------- builders
def mha_block(impl, d_model: int, h: int, p: float, device: str, dtype: torch.dtype) -> nn.Module:
    return construct(impl.MultiHeadAttentionBlock, d_model, h, p, device=device, dtype=dtype)


def encoder_block(impl, d_model: int, h: int, d_ff: int, p: float, device: str, dtype: torch.dtype) -> nn.Module:
    kw = {"device": device, "dtype": dtype}
    return construct(impl.EncoderBlock, d_model, mha_block(impl, d_model, h, p, device, dtype),
                     construct(impl.FeedForwardBlock, d_model, d_ff, p, **kw), p, **kw)


def decoder_block(impl, d_model: int, h: int, d_ff: int, p: float, device: str, dtype: torch.dtype) -> nn.Module:
    kw = {"device": device, "dtype": dtype}
    return construct(impl.DecoderBlock, d_model, mha_block(impl, d_model, h, p, device, dtype),
                     mha_block(impl, d_model, h, p, device, dtype),
                     construct(impl.FeedForwardBlock, d_model, d_ff, p, **kw), p, **kw)


def encoder(impl, n: int, d_model: int, h: int, d_ff: int, p: float, device: str, dtype: torch.dtype) -> nn.Module:
    blocks = nn.ModuleList([encoder_block(impl, d_model, h, d_ff, p, device, dtype) for _ in range(n)])
    return construct(impl.Encoder, d_model, blocks, device=device, dtype=dtype)


def decoder(impl, n: int, d_model: int, h: int, d_ff: int, p: float, device: str, dtype: torch.dtype) -> nn.Module:
    blocks = nn.ModuleList([decoder_block(impl, d_model, h, d_ff, p, device, dtype) for _ in range(n)])
    return construct(impl.Decoder, d_model, blocks, device=device, dtype=dtype)


def keys_values(case: AttentionInputs, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, v) of an attention call: x itself for self-attention (one tensor, as the blocks call it); for
    cross-attention the memory as keys and the memory reversed along its length as values, so that k and v differ
    (a block that projects its values from k is caught)."""
    if case.memory is None:
        return x, x
    return (as_tensor(case.memory, x.device, x.dtype),
            as_tensor(case.memory[:, ::-1].copy(), x.device, x.dtype))


def rows(case: AttentionInputs, mask: np.ndarray | None, len_k: int) -> torch.Tensor:
    return ta.attended_rows(mask, batch=case.cfg.B, heads=case.cfg.h, len_q=case.cfg.Lq, len_k=len_k)


# --------------------------------------------------------------------------------------------------- attention
@pytest.mark.clause("mha.formula", "mask.semantics", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(), mode=dropout_modes(), seed=SEEDS)
def test_multi_head_attention_block_matches_torch_mha(impl, device, dtype, case: AttentionInputs,
                                                      mode: DropoutMode, seed: int) -> None:
    """Self- and cross-attention (k != v), every mask kind, vs ``nn.MultiheadAttention`` (fused path in eval for
    self-attention with even h: q, k and v are one tensor)."""
    cfg = case.cfg
    config = {**case.describe(), "mode": mode, "seed": seed}
    note(config)
    block = randomize_parameters_(mha_block(impl, cfg.d_model, cfg.h, mode.p, device, dtype), seed)
    mha = ta.to_multihead_attention(block, h=cfg.h)
    set_mode([block, mha], mode)
    x = as_tensor(case.x, device, dtype)
    k, v = keys_values(case, x)
    mask = as_tensor(case.mask, device)
    with torch.no_grad():
        out = block(x, k, v, mask)
        ref = ta.mha_forward(mha, x, k, v, mask)

    def oracle() -> np.ndarray:
        return numpy_ref.multi_head_attention(f64(x), f64(k), f64(v), case.mask, extract_weights(block), cfg.h)[0]

    check_forward(out, ref, oracle, dtype=dtype, component="MultiHeadAttentionBlock", config=config,
                  where=rows(case, case.mask, cfg.Lk), label="nn.MultiheadAttention")


@pytest.mark.clause("mha.formula", "mask.semantics", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(), seed=SEEDS)
def test_multi_head_attention_block_matches_sdpa(impl, device, dtype, case: AttentionInputs, seed: int) -> None:
    """The same projections around ``F.scaled_dot_product_attention`` (bool mask, True = attend)."""
    cfg = case.cfg
    config = {**case.describe(), "seed": seed}
    note(config)
    block = randomize_parameters_(mha_block(impl, cfg.d_model, cfg.h, 0.0, device, dtype), seed).eval()
    x = as_tensor(case.x, device, dtype)
    k, v = keys_values(case, x)
    mask = as_tensor(case.mask, device)
    with torch.no_grad():
        out = block(x, k, v, mask)
        ref = ta.sdpa_attention(block, x, k, v, mask, h=cfg.h)

    def oracle() -> np.ndarray:
        return numpy_ref.multi_head_attention(f64(x), f64(k), f64(v), case.mask, extract_weights(block), cfg.h)[0]

    check_forward(out, ref, oracle, dtype=dtype, component="MultiHeadAttentionBlock", config=config,
                  where=rows(case, case.mask, cfg.Lk), label="F.scaled_dot_product_attention")


# --------------------------------------------------------------------------------------------------- layers
@pytest.mark.clause("encoder.block", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(cross=False), d_ff=feed_forward_widths(), mode=dropout_modes(), seed=SEEDS)
def test_encoder_block_matches_torch_encoder_layer(impl, device, dtype, case: AttentionInputs, d_ff: int,
                                                   mode: DropoutMode, seed: int) -> None:
    cfg = case.cfg
    config = {**case.describe(), "d_ff": d_ff, "mode": mode, "seed": seed}
    note(config)
    block = randomize_parameters_(encoder_block(impl, cfg.d_model, cfg.h, d_ff, mode.p, device, dtype), seed)
    layer = ta.to_encoder_layer(block, h=cfg.h)
    set_mode([block, layer], mode)
    x, mask = as_tensor(case.x, device, dtype), as_tensor(case.mask, device)
    with torch.no_grad():
        out = block(x, mask)
        ref = ta.encoder_forward(layer, x, mask)

    def oracle() -> np.ndarray:
        return numpy_ref.encoder_block(f64(x), case.mask, extract_weights(block), cfg.h, CONTRACT_EPS)

    check_forward(out, ref, oracle, dtype=dtype, component="EncoderBlock", config=config,
                  where=rows(case, case.mask, cfg.Lq), label="nn.TransformerEncoderLayer")


@pytest.mark.clause("decoder.block", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(decoder=True), d_ff=feed_forward_widths(), mode=dropout_modes(), seed=SEEDS)
def test_decoder_block_matches_torch_decoder_layer(impl, device, dtype, case: AttentionInputs, d_ff: int,
                                                   mode: DropoutMode, seed: int) -> None:
    """Masked self-attention over x (self_mask), cross-attention over the memory (mask, Lq != Lk)."""
    cfg = case.cfg
    config = {**case.describe(), "d_ff": d_ff, "mode": mode, "seed": seed}
    note(config)
    block = randomize_parameters_(decoder_block(impl, cfg.d_model, cfg.h, d_ff, mode.p, device, dtype), seed)
    layer = ta.to_decoder_layer(block, h=cfg.h)
    set_mode([block, layer], mode)
    x, memory = as_tensor(case.x, device, dtype), as_tensor(case.memory, device, dtype)
    src_mask, tgt_mask = as_tensor(case.mask, device), as_tensor(case.self_mask, device)
    with torch.no_grad():
        out = block(x, memory, src_mask, tgt_mask)
        ref = ta.decoder_forward(layer, x, memory, src_mask, tgt_mask)

    def oracle() -> np.ndarray:
        return numpy_ref.decoder_block(f64(x), f64(memory), case.mask, case.self_mask, extract_weights(block),
                                       cfg.h, CONTRACT_EPS)

    where = rows(case, case.mask, cfg.Lk) & rows(case, case.self_mask, cfg.Lq)
    check_forward(out, ref, oracle, dtype=dtype, component="DecoderBlock", config=config, where=where,
                  label="nn.TransformerDecoderLayer")


# --------------------------------------------------------------------------------------------------- stacks
# No fully masked rows here: torch's NaN rows become keys of the next layer and poison every row there. Stacks of up
# to 3 layers keep lengths <= 32 for speed (single layers and attention reach 64).
STACKS = {"max_len": 32, "allow_fully_masked": False}


@pytest.mark.clause("encoder.stack", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(cross=False, **STACKS), n=LAYERS, d_ff=feed_forward_widths(),
       mode=dropout_modes(), seed=SEEDS)
def test_encoder_matches_torch_encoder(impl, device, dtype, case: AttentionInputs, n: int, d_ff: int,
                                       mode: DropoutMode, seed: int) -> None:
    cfg = case.cfg
    config = {**case.describe(), "N": n, "d_ff": d_ff, "mode": mode, "seed": seed}
    note(config)
    stack = randomize_parameters_(encoder(impl, n, cfg.d_model, cfg.h, d_ff, mode.p, device, dtype), seed)
    torch_stack = ta.to_encoder(stack, h=cfg.h)
    set_mode([stack, torch_stack], mode)
    x, mask = as_tensor(case.x, device, dtype), as_tensor(case.mask, device)
    with torch.no_grad():
        out = stack(x, mask)
        ref = ta.encoder_forward(torch_stack, x, mask)

    def oracle() -> np.ndarray:
        return numpy_ref.encoder(f64(x), case.mask, extract_weights(stack), cfg.h, CONTRACT_EPS)

    check_forward(out, ref, oracle, dtype=dtype, component="Encoder", config=config, label="nn.TransformerEncoder")


@pytest.mark.clause("decoder.stack", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(decoder=True, **STACKS), n=LAYERS, d_ff=feed_forward_widths(),
       mode=dropout_modes(), seed=SEEDS)
def test_decoder_matches_torch_decoder(impl, device, dtype, case: AttentionInputs, n: int, d_ff: int,
                                       mode: DropoutMode, seed: int) -> None:
    cfg = case.cfg
    config = {**case.describe(), "N": n, "d_ff": d_ff, "mode": mode, "seed": seed}
    note(config)
    stack = randomize_parameters_(decoder(impl, n, cfg.d_model, cfg.h, d_ff, mode.p, device, dtype), seed)
    torch_stack = ta.to_decoder(stack, h=cfg.h)
    set_mode([stack, torch_stack], mode)
    x, memory = as_tensor(case.x, device, dtype), as_tensor(case.memory, device, dtype)
    src_mask, tgt_mask = as_tensor(case.mask, device), as_tensor(case.self_mask, device)
    with torch.no_grad():
        out = stack(x, memory, src_mask, tgt_mask)
        ref = ta.decoder_forward(torch_stack, x, memory, src_mask, tgt_mask)

    def oracle() -> np.ndarray:
        return numpy_ref.decoder(f64(x), f64(memory), case.mask, case.self_mask, extract_weights(stack), cfg.h,
                                 CONTRACT_EPS)

    check_forward(out, ref, oracle, dtype=dtype, component="Decoder", config=config, label="nn.TransformerDecoder")


# --------------------------------------------------------------------------------------------------- torch's fast paths
@pytest.mark.clause("encoder.stack", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(cross=False, even_heads=True, **STACKS), n=LAYERS,
       d_ff=feed_forward_widths(), p=st.sampled_from((0.0, 0.1)), seed=SEEDS)
def test_encoder_matches_torch_fused_encoder_layers(impl, device, dtype, case: AttentionInputs, n: int, d_ff: int,
                                                    p: float, seed: int) -> None:
    """Eval, no grad, even h, bias=True: every torch layer runs ``torch._transformer_encoder_layer_fwd`` (which
    takes ``norm_first=True``), with any mask kind."""
    cfg = case.cfg
    config = {**case.describe(), "N": n, "d_ff": d_ff, "p": p, "seed": seed}
    note(config)
    stack = randomize_parameters_(encoder(impl, n, cfg.d_model, cfg.h, d_ff, p, device, dtype), seed).eval()
    torch_stack = ta.to_encoder(stack, h=cfg.h).eval()
    x, mask = as_tensor(case.x, device, dtype), as_tensor(case.mask, device)
    with torch.no_grad(), counting("_transformer_encoder_layer_fwd") as calls:
        ref = ta.encoder_forward(torch_stack, x, mask)
        out = stack(x, mask)
    assert calls["_transformer_encoder_layer_fwd"] == n, f"torch's fused layer did not run: {dict(calls)}"

    def oracle() -> np.ndarray:
        return numpy_ref.encoder(f64(x), case.mask, extract_weights(stack), cfg.h, CONTRACT_EPS)

    check_forward(out, ref, oracle, dtype=dtype, component="Encoder", config=config,
                  label="nn.TransformerEncoder (fused layers)")


@pytest.mark.clause("encoder.stack", "mask.semantics", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=dense_attention_inputs(cross=False, even_heads=True, mask_kinds=KEY_PADDING_KINDS, **STACKS), n=LAYERS,
       d_ff=feed_forward_widths(), seed=SEEDS)
def test_encoder_matches_torch_nested_tensor_path(impl, device, dtype, case: AttentionInputs, n: int, d_ff: int,
                                                  seed: int) -> None:
    """The nested-tensor encoder (opted into; torch refuses it for norm_first=True by default) agrees at real
    positions; at padded positions torch returns the final norm of a zero row, i.e. the norm's bias."""
    cfg = case.cfg
    config = {**case.describe(), "N": n, "d_ff": d_ff, "seed": seed}
    note(config)
    stack = randomize_parameters_(encoder(impl, n, cfg.d_model, cfg.h, d_ff, 0.0, device, dtype), seed).eval()
    torch_stack = ta.to_encoder(stack, h=cfg.h, nested_tensor=True).eval()
    x, mask = as_tensor(case.x, device, dtype), as_tensor(case.mask, device)
    with torch.no_grad(), counting("_nested_tensor_from_mask", "_transformer_encoder_layer_fwd") as calls:
        ref = ta.encoder_forward(torch_stack, x, mask)
        out = stack(x, mask)
    assert calls["_nested_tensor_from_mask"] == 1 and calls["_transformer_encoder_layer_fwd"] == n, (
        f"torch's nested-tensor path did not run: {dict(calls)}")
    real = torch.as_tensor(case.mask).reshape(cfg.B, cfg.Lq, 1)  # (B, L, 1): positions that are not padding

    def oracle() -> np.ndarray:
        return numpy_ref.encoder(f64(x), case.mask, extract_weights(stack), cfg.h, CONTRACT_EPS)

    check_forward(out, ref, oracle, dtype=dtype, component="Encoder", config=config, where=real,
                  label="nn.TransformerEncoder (nested tensor)")
    padded = ref[~real.expand_as(ref).to(ref.device)].reshape(-1, cfg.d_model)
    assert torch.equal(padded, torch_stack.norm.bias.detach().expand_as(padded)), (
        "torch's nested-tensor path no longer returns norm(0) = bias at padded positions: update "
        "docs/divergences.md")


# --------------------------------------------------------------------------------------------------- the model
@pytest.mark.clause("transformer.compose", "extra.forward", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=model_inputs(), mode=dropout_modes(), seed=SEEDS)
def test_transformer_matches_torch_transformer(impl, device, dtype, case: ModelInputs, mode: DropoutMode,
                                               seed: int) -> None:
    """encode / decode / project against ``nn.Transformer``'s encoder and decoder between ``nn.Embedding`` and
    ``nn.Linear``, and the logits against ``nn.Transformer.forward`` end to end."""
    config = {**case.describe(), "mode": mode, "seed": seed}
    note(config)
    cfg = type(case.cfg)(**{**case.cfg.kwargs(), "dropout": mode.p})
    model = randomize_parameters_(build_model(impl, cfg, device=device, dtype=dtype), seed)
    torch_model = ta.TorchTransformerModel(model, h=cfg.h)
    set_mode([model, torch_model], mode)
    src, tgt = as_tensor(case.src, device), as_tensor(case.tgt, device)
    src_mask, tgt_mask = as_tensor(case.src_mask, device), as_tensor(case.tgt_mask, device)
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        decoded = model.decode(memory, src_mask, tgt, tgt_mask)
        logits = model.project(decoded)
        t_memory = torch_model.encode(src, src_mask)
        t_decoded = torch_model.decode(t_memory, src_mask, tgt, tgt_mask)
        t_logits = torch_model.project(t_decoded)
        end_to_end = torch_model(src, tgt, src_mask, tgt_mask)
    w, h, eps = extract_weights(model), cfg.h, CONTRACT_EPS
    trace: dict[str, np.ndarray] = {}

    def oracle(key: str) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            if not trace:
                numpy_ref.transformer(case.src, case.tgt, case.src_mask, case.tgt_mask, w, h, eps, trace=trace)
            return trace[key]
        return run

    check_forward(memory, t_memory, oracle("encoder"), dtype=dtype, component="Transformer.encode", config=config,
                  label="nn.Transformer.encoder")
    check_forward(decoded, t_decoded, oracle("decoder"), dtype=dtype, component="Transformer.decode",
                  config=config, label="nn.Transformer.decoder")
    check_forward(logits, t_logits, oracle("projection_layer"), dtype=dtype, component="Transformer.project",
                  config=config, label="nn.Linear")
    check_forward(logits, end_to_end, oracle("projection_layer"), dtype=dtype, component="Transformer (logits)",
                  config=config, label="nn.Transformer.forward")
    if not missing_extras(impl, "Transformer.forward"):
        with torch.no_grad():
            forward = model(src, tgt, src_mask, tgt_mask)
        check_forward(forward, end_to_end, oracle("projection_layer"), dtype=dtype, component="Transformer.forward",
                      config=config, label="nn.Transformer.forward")


# --------------------------------------------------------------------------------------------------- measurement
def measure_error_ratios(module: ModuleType, examples: int, dtypes: tuple[torch.dtype, ...]) -> None:
    """Run every test of ``module`` (this one, or tests.test_gradients) with ``examples`` Hypothesis examples,
    recording instead of asserting through ``module.POLICY``, and print per comparison: percentiles of
    impl_err / torch_err, how many exceed K, the largest impl_err / allowed, the smallest floor (in eps of the
    output scale) under which every example passes with K, and the worst example (docs/tolerances.md)."""
    from collections import defaultdict

    from hypothesis import settings

    from reference import tolerances
    from reference.compare import error_stats
    from reference.contract import load_impl

    samples: dict[tuple[str, str], list[tuple[float, float, float, float, float]]] = defaultdict(list)
    worst: dict[tuple[str, str], tuple[float, dict]] = {}

    def record(actual, torch_out, oracle, *, component, dtype, config, where, label):
        expected = oracle()
        impl_err, torch_err = error_stats(actual, expected, where), error_stats(torch_out, expected, where)
        allowed = tolerances.allowed_error(dtype, torch_err.max_abs, impl_err.scale)
        unit = tolerances.eps(dtype) * max(impl_err.scale, 1.0)
        needed = (impl_err.max_abs - tolerances.K * torch_err.max_abs) / unit
        direct = error_stats(actual, torch_out, where).max_abs / max(impl_err.scale, 1.0)
        key = (str(dtype).replace("torch.", ""), f"{component} vs {label}")
        samples[key].append((impl_err.max_abs, torch_err.max_abs, allowed, needed, direct))
        if impl_err.max_abs / allowed > worst.get(key, (0.0, {}))[0]:
            worst[key] = (impl_err.max_abs / allowed, {**config, "impl_err": impl_err.max_abs,
                                                       "torch_err": torch_err.max_abs, "out_scale": impl_err.scale})

    module.POLICY = record
    impl = load_impl()
    for name, test in list(vars(module).items()):
        if name.startswith("test_"):
            run = settings(max_examples=examples, derandomize=True, database=None, deadline=None)(test)
            if "dtype" in inspect.signature(test).parameters:
                for dtype in dtypes:
                    run(impl=impl, device="cpu", dtype=dtype)
            elif "float64" not in name or torch.float64 in dtypes:
                run(impl=impl, device="cpu")
    print(f"impl_err / torch_err over {examples} examples per comparison (K = {tolerances.K}; 'torch exact': "
          "examples where torch's error is 0, left out of the percentiles); floor needed = smallest FLOOR_EPS "
          "under which every example passes with K")
    print(f"{'dtype':8s} {'comparison':68s} {'n':>4s} {'p50':>5s} {'p90':>5s} {'p99':>5s} {'max':>6s} {'>K':>3s} "
          f"{'torch exact':>11s} {'err/allowed':>11s} {'floor needed':>12s} {'|impl-torch|/scale':>18s}")
    for (dtype, what), rows_ in sorted(samples.items()):
        errs = np.array(rows_)
        measurable = errs[:, 1] > 0
        ratio = errs[measurable, 0] / errs[measurable, 1]
        q = np.percentile(ratio, [50, 90, 99]) if ratio.size else [np.nan] * 3
        print(f"{dtype:8s} {what:68s} {len(errs):4d} {q[0]:5.2f} {q[1]:5.2f} {q[2]:5.2f} "
              f"{(ratio.max() if ratio.size else np.nan):6.2f} {int((ratio > tolerances.K).sum()):3d} "
              f"{int((~measurable).sum()):11d} {float((errs[:, 0] / errs[:, 2]).max()):11.3f} "
              f"{max(0.0, float(errs[:, 3].max())):12.2f} {float(errs[:, 4].max()):18.2e}")
    print("worst example of each comparison (largest impl_err / allowed):")
    for key, (ratio_, config) in sorted(worst.items()):
        print(f"  {key[0]} {key[1]}: {ratio_:.3f} {config}")


if __name__ == "__main__":  # python -m tests.test_equivalence_torch [examples]
    import sys

    measure_error_ratios(sys.modules[__name__], int(sys.argv[1]) if len(sys.argv) > 1 else 100,
                         (torch.float32, torch.float64))
