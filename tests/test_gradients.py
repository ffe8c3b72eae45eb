"""Gradients of every parameter and every floating input against PyTorch's modules loaded with the same weights.

NumPy has no autograd, so PyTorch's own module in float64 is the gradient oracle. The loss is ``sum(out * g)`` for
a fixed random cotangent g (every output element weighs in). float64: the implementation's gradients against torch's
directly (``GRAD_TOL[float64]``, atol in units of the gradient's scale) on well-conditioned inputs; float32: the
implementation's error against torch's float64 gradients (same float32-exact weights and inputs) at most K times
torch's float32 error plus the floor, on every scale but 'offset' (see ``FLOAT32_GRADIENT_SCALES``). Torch's
gradients are mapped back to contract names (``in_proj_weight`` split into w_q / w_k / w_v, and ``in_proj_bias`` /
``out_proj.bias`` into w_q.bias ... w_o.bias where the projections have biases, which are then compared like every
other parameter). Masks have no fully masked row here (torch's NaN rows poison its gradients); what the
implementation does there is tested on its own: finite gradients, and exactly zero for the keys and values nobody
may attend to.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from torch import nn

from reference.judge import conditioning
from reference.oracles import masks, torch_names
from reference.oracles import torch_adapters as ta
from reference.judge.compare import assert_error_ratio, check_output
from reference.spec.contract import build_model, randomize_parameters_
from tests.strategies import (WELL_CONDITIONED_SCALES, AttentionInputs, DropoutMode, ModelInputs,
                              dense_attention_inputs, dropout_modes, feed_forward_widths, model_inputs)
from tests.support import (DTYPES, LAYERS, SEEDS, as_tensor, assert_float64_close, decoder, decoder_block, encoder,
                           encoder_block, mha_block, noted, set_mode, torch_twin)

Grads = dict[str, torch.Tensor]
Runner = Callable[..., torch.Tensor]  # (module, **floating inputs) -> output


# --------------------------------------------------------------------------------------------------- policy
def apply_policy(actual: torch.Tensor, torch_out: torch.Tensor, oracle: Callable[[], torch.Tensor], *,
                 dtype: torch.dtype, component: str, config: dict, where: None, label: str,
                 sensitivity: Callable[[], torch.Tensor] | None = None) -> None:
    """float64: direct (GRAD_TOL); lower precision: the error-ratio rule against torch's float64 gradient. Both
    widen to the conditioning bound where the gradient is ill-conditioned (``sensitivity``, float32/float64)."""
    __tracebackhide__ = True
    if dtype == torch.float64:
        assert_float64_close(actual, torch_out, component=f"{component} vs {label}", config=config, grad=True,
                             sensitivity=sensitivity)
    else:
        assert_error_ratio(actual, torch_out, oracle(), component=f"{component} (gradient)", dtype=dtype,
                           config=config, label=label, sensitivity=sensitivity)


#: The policy every gradient goes through (``python -m benchmarks.error_ratios --module tests.test_gradients``
#: swaps in a recorder).
POLICY: Callable[..., None] = apply_policy


def cotangent(shape: torch.Size, seed: int) -> np.ndarray:
    """A dense random upstream gradient, float32-exact (so every dtype sees the same one)."""
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32).astype(np.float64)


def gradients(module: nn.Module, run: Runner, inputs: dict[str, torch.Tensor], g: np.ndarray, names: Callable
              ) -> Grads:
    """d sum(run(module, **inputs) * g) / d (every parameter, every input), keyed by contract name / "input <k>"."""
    module.zero_grad(set_to_none=True)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    out = run(module, **leaves)
    (out * torch.as_tensor(g, dtype=out.dtype, device=out.device)).sum().backward()
    grads = {f"input {k}": leaf.grad for k, leaf in leaves.items()}
    grads.update(names(module))
    return grads


def impl_names(module: nn.Module) -> Grads:
    return {name: p.grad for name, p in module.named_parameters()}


def compare_gradients(impl_module: nn.Module, torch_module: nn.Module, impl_run: Runner, torch_run: Runner,
                      inputs: dict[str, torch.Tensor], *, dtype: torch.dtype, component: str, config: dict,
                      label: str, seed: int) -> None:
    """Gradients of the implementation vs torch, for every contract parameter and floating input."""
    __tracebackhide__ = True
    with torch.no_grad():  # the contract's output shape is torch's; the implementation's is checked before use
        contract = torch_run(torch_module, **inputs).shape
        shape = check_output(impl_run(impl_module, **inputs), contract, component=component, config=config).shape
    g = cotangent(shape, seed)
    ours = gradients(impl_module, impl_run, inputs, g, impl_names)
    theirs = gradients(torch_module, torch_run, inputs, g, torch_names.grads_by_contract_name)
    assert set(ours) == set(theirs), f"gradient names differ: {set(ours) ^ set(theirs)}"
    reference: Grads = theirs  # float64: torch's gradient is the oracle
    torch64 = torch_module
    if dtype != torch.float64:  # torch in float64 on the same (float32-exact) weights and inputs: the oracle
        torch64 = copy.deepcopy(torch_module).to(torch.float64)
        reference = gradients(torch64, torch_run, {k: v.double() for k, v in inputs.items()}, g,
                              torch_names.grads_by_contract_name)
    cache: dict[str, Grads] = {}

    def sensitivity(name: str) -> torch.Tensor:
        """How far one rounding (in ``dtype``) of every weight and input moves the float64 gradient of ``name``."""
        if not cache:
            cache.update(conditioning.torch_sensitivities(
                lambda modules, moved: gradients(modules[0], torch_run, moved, g, torch_names.grads_by_contract_name),
                [torch64], {k: v.double() for k, v in inputs.items()}, reference, conditioning.unit_roundoff(dtype)))
        return cache[name]

    conditioned = dtype in (torch.float32, torch.float64)
    for name, grad in ours.items():
        assert grad is not None and theirs[name] is not None, f"{component}: no gradient for {name}"
        bad = ~torch.isfinite(grad)
        assert not bad.any(), f"{component} {config}: {int(bad.sum())} non-finite gradients of {name}"
        POLICY(grad, theirs[name], lambda name=name: reference[name], dtype=dtype,
               component=f"{component}: d loss / d {name}", config=config, where=None, label=label,
               sensitivity=(lambda name=name: sensitivity(name)) if conditioned else None)


# --------------------------------------------------------------------------------------------------- cases
#: What a component's gradients are taken with: its floating inputs (name -> array) and how the implementation's
#: module and torch's are called on them.
Case = tuple[dict[str, np.ndarray], Runner, Runner]


def run_self_or_cross(case: AttentionInputs) -> Case:
    """Inputs and runners for an attention block: self-attention feeds one x as q, k and v; cross-attention q, the
    memory as k and the memory reversed along its length as v."""
    mask = case.mask
    if case.memory is None:
        return ({"x": case.x}, lambda m, x: m(x, x, x, _on(mask, x)),
                lambda m, x: ta.mha_forward(m, x, x, x, _on(mask, x)))
    inputs = {"q": case.x, "k": case.memory, "v": case.memory[:, ::-1].copy()}  # k != v
    return (inputs, lambda m, q, k, v: m(q, k, v, _on(mask, q)),
            lambda m, q, k, v: ta.mha_forward(m, q, k, v, _on(mask, q)))


def run_encoder(case: AttentionInputs) -> Case:
    """Inputs and runners for an encoder block or stack: x under ``case.mask``."""
    mask = case.mask
    return {"x": case.x}, lambda m, x: m(x, _on(mask, x)), lambda m, x: ta.encoder_forward(m, x, mask)


def run_decoder(case: AttentionInputs) -> Case:
    """Inputs and runners for a decoder block or stack: x and the memory, under src_mask = ``case.mask`` and
    tgt_mask = ``case.self_mask``."""
    src, tgt = case.mask, case.self_mask
    return ({"x": case.x, "memory": case.memory}, lambda m, x, memory: m(x, memory, _on(src, x), _on(tgt, x)),
            lambda m, x, memory: ta.decoder_forward(m, x, memory, src, tgt))


def _on(mask: np.ndarray | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if mask is None else torch.as_tensor(mask, device=like.device)


def tensors(arrays: dict[str, np.ndarray], device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: as_tensor(v, device, dtype) for k, v in arrays.items()}


def compare_case_gradients(impl_module: nn.Module, torch_module: nn.Module, case: Case, device: str,
                           dtype: torch.dtype, **kwargs) -> None:
    """``compare_gradients`` on ``case``'s inputs (as tensors in ``dtype``) and runners."""
    __tracebackhide__ = True
    arrays, impl_run, torch_run = case
    compare_gradients(impl_module, torch_module, impl_run, torch_run, tensors(arrays, device, dtype), dtype=dtype,
                      **kwargs)


# --------------------------------------------------------------------------------------------------- components
def mha_gradients(impl, device: str, dtype: torch.dtype, case: AttentionInputs, mode: DropoutMode, seed: int) -> None:
    cfg = case.cfg
    config = noted(case, mode=mode, seed=seed)
    block = randomize_parameters_(mha_block(impl, cfg.d_model, cfg.h, mode.p, device, dtype), seed)
    mha = torch_twin(block, ta.to_multihead_attention, cfg.h, mode)
    compare_case_gradients(block, mha, run_self_or_cross(case), device, dtype, component="MultiHeadAttentionBlock",
                           config=config, label="nn.MultiheadAttention", seed=seed)


def encoder_block_gradients(impl, device: str, dtype: torch.dtype, case: AttentionInputs, d_ff: int,
                            mode: DropoutMode, seed: int) -> None:
    cfg = case.cfg
    config = noted(case, d_ff=d_ff, mode=mode, seed=seed)
    block = randomize_parameters_(encoder_block(impl, cfg.d_model, cfg.h, d_ff, mode.p, device, dtype), seed)
    layer = torch_twin(block, ta.to_encoder_layer, cfg.h, mode)
    compare_case_gradients(block, layer, run_encoder(case), device, dtype, component="EncoderBlock", config=config,
                           label="nn.TransformerEncoderLayer", seed=seed)


def decoder_block_gradients(impl, device: str, dtype: torch.dtype, case: AttentionInputs, d_ff: int,
                            mode: DropoutMode, seed: int) -> None:
    cfg = case.cfg
    config = noted(case, d_ff=d_ff, mode=mode, seed=seed)
    block = randomize_parameters_(decoder_block(impl, cfg.d_model, cfg.h, d_ff, mode.p, device, dtype), seed)
    layer = torch_twin(block, ta.to_decoder_layer, cfg.h, mode)
    compare_case_gradients(block, layer, run_decoder(case), device, dtype, component="DecoderBlock", config=config,
                           label="nn.TransformerDecoderLayer", seed=seed)


def encoder_gradients(impl, device: str, dtype: torch.dtype, case: AttentionInputs, n: int, d_ff: int,
                      seed: int) -> None:
    cfg = case.cfg
    config = noted(case, N=n, d_ff=d_ff, seed=seed)
    stack = randomize_parameters_(encoder(impl, n, cfg.d_model, cfg.h, d_ff, 0.0, device, dtype), seed)
    compare_case_gradients(stack, ta.to_encoder(stack, h=cfg.h), run_encoder(case), device, dtype,
                           component="Encoder", config=config, label="nn.TransformerEncoder", seed=seed)


def decoder_gradients(impl, device: str, dtype: torch.dtype, case: AttentionInputs, n: int, d_ff: int,
                      seed: int) -> None:
    cfg = case.cfg
    config = noted(case, N=n, d_ff=d_ff, seed=seed)
    stack = randomize_parameters_(decoder(impl, n, cfg.d_model, cfg.h, d_ff, 0.0, device, dtype), seed)
    compare_case_gradients(stack, ta.to_decoder(stack, h=cfg.h), run_decoder(case), device, dtype,
                           component="Decoder", config=config, label="nn.TransformerDecoder", seed=seed)


# --------------------------------------------------------------------------------------------------- tests
# float64: well-conditioned inputs only. torch's float64 gradient is the oracle and is itself only good to
# eps x the internal scale: at 'large'/'offset' inputs (scores beyond 1e6, activations at 1e4) its backward is off
# by up to ~5e-8 where the exact gradient is 0 (docs/tolerances.md). Those scales run in float32 against it.
#
# float32: every scale but 'offset'. At a 1e4 offset the float32 gradient carries no information: torch's own float32
# gradient misses its float64 value by 1-10 times the gradient itself (measured: d/d norm.bias 1.4e-3 off on a
# 4.4e-4 gradient; d/d w_k 83 off on 8.1), so the error ratio would compare noise with noise and fail at random.
FLOAT32_GRADIENT_SCALES = ("tiny", "unit", "large")
MHA_CASES = {"max_len": 32, "max_d_model": 64, "allow_fully_masked": False}
LAYER_CASES = {"max_len": 32, "max_d_model": 64, "allow_fully_masked": False}
STACK_CASES = {"max_len": 16, "max_d_model": 64, "allow_fully_masked": False}
#: The input scales of each dtype's gradient tests (above).
GRADIENT_SCALES = {torch.float64: WELL_CONDITIONED_SCALES, torch.float32: FLOAT32_GRADIENT_SCALES}


def mha_cases(dtype: torch.dtype) -> dict[str, st.SearchStrategy]:
    """``@given`` arguments of an attention block's gradient test in ``dtype``: case, mode, seed."""
    return {"case": dense_attention_inputs(scales=GRADIENT_SCALES[dtype], **MHA_CASES), "mode": dropout_modes(),
            "seed": SEEDS}


def layer_cases(dtype: torch.dtype, **kind: bool) -> dict[str, st.SearchStrategy]:
    """``@given`` arguments of an encoder (``cross=False``) or decoder (``decoder=True``) block's gradient test in
    ``dtype``: case, d_ff, mode, seed."""
    return {"case": dense_attention_inputs(**kind, scales=GRADIENT_SCALES[dtype], **LAYER_CASES),
            "d_ff": feed_forward_widths(64), "mode": dropout_modes(), "seed": SEEDS}


def stack_cases(dtype: torch.dtype, **kind: bool) -> dict[str, st.SearchStrategy]:
    """``@given`` arguments of an encoder (``cross=False``) or decoder (``decoder=True``) stack's gradient test in
    ``dtype``: case, n, d_ff, seed."""
    return {"case": dense_attention_inputs(**kind, scales=GRADIENT_SCALES[dtype], **STACK_CASES), "n": LAYERS,
            "d_ff": feed_forward_widths(64), "seed": SEEDS}


@pytest.mark.clause("mha.formula", "numerics.float64")
@given(**mha_cases(torch.float64))
def test_multi_head_attention_block_gradients_match_torch_float64(impl, device, case: AttentionInputs,
                                                                  mode: DropoutMode, seed: int) -> None:
    """w_q, w_k, w_v, w_o (and their biases, when the block has them) and the inputs, self- and cross-attention,
    every mask kind, vs nn.MultiheadAttention."""
    mha_gradients(impl, device, torch.float64, case, mode, seed)


@pytest.mark.clause("mha.formula", "numerics.float32")
@given(**mha_cases(torch.float32))
def test_multi_head_attention_block_gradients_match_torch_float32(impl, device, case: AttentionInputs,
                                                                  mode: DropoutMode, seed: int) -> None:
    mha_gradients(impl, device, torch.float32, case, mode, seed)


@pytest.mark.clause("encoder.block", "numerics.float64")
@given(**layer_cases(torch.float64, cross=False))
def test_encoder_block_gradients_match_torch_float64(impl, device, case: AttentionInputs, d_ff: int,
                                                     mode: DropoutMode, seed: int) -> None:
    encoder_block_gradients(impl, device, torch.float64, case, d_ff, mode, seed)


@pytest.mark.clause("encoder.block", "numerics.float32")
@given(**layer_cases(torch.float32, cross=False))
def test_encoder_block_gradients_match_torch_float32(impl, device, case: AttentionInputs, d_ff: int,
                                                     mode: DropoutMode, seed: int) -> None:
    encoder_block_gradients(impl, device, torch.float32, case, d_ff, mode, seed)


@pytest.mark.clause("decoder.block", "numerics.float64")
@given(**layer_cases(torch.float64, decoder=True))
def test_decoder_block_gradients_match_torch_float64(impl, device, case: AttentionInputs, d_ff: int,
                                                     mode: DropoutMode, seed: int) -> None:
    """Including the gradient that flows into the encoder output through cross-attention."""
    decoder_block_gradients(impl, device, torch.float64, case, d_ff, mode, seed)


@pytest.mark.clause("decoder.block", "numerics.float32")
@given(**layer_cases(torch.float32, decoder=True))
def test_decoder_block_gradients_match_torch_float32(impl, device, case: AttentionInputs, d_ff: int,
                                                     mode: DropoutMode, seed: int) -> None:
    decoder_block_gradients(impl, device, torch.float32, case, d_ff, mode, seed)


@pytest.mark.clause("encoder.stack", "numerics.float64")
@given(**stack_cases(torch.float64, cross=False))
def test_encoder_gradients_match_torch_float64(impl, device, case: AttentionInputs, n: int, d_ff: int,
                                               seed: int) -> None:
    encoder_gradients(impl, device, torch.float64, case, n, d_ff, seed)


@pytest.mark.clause("encoder.stack", "numerics.float32")
@given(**stack_cases(torch.float32, cross=False))
def test_encoder_gradients_match_torch_float32(impl, device, case: AttentionInputs, n: int, d_ff: int,
                                               seed: int) -> None:
    encoder_gradients(impl, device, torch.float32, case, n, d_ff, seed)


@pytest.mark.clause("decoder.stack", "numerics.float64")
@given(**stack_cases(torch.float64, decoder=True))
def test_decoder_gradients_match_torch_float64(impl, device, case: AttentionInputs, n: int, d_ff: int,
                                               seed: int) -> None:
    decoder_gradients(impl, device, torch.float64, case, n, d_ff, seed)


@pytest.mark.clause("decoder.stack", "numerics.float32")
@given(**stack_cases(torch.float32, decoder=True))
def test_decoder_gradients_match_torch_float32(impl, device, case: AttentionInputs, n: int, d_ff: int,
                                               seed: int) -> None:
    decoder_gradients(impl, device, torch.float32, case, n, d_ff, seed)


@pytest.mark.clause("transformer.compose", "numerics.float64", "numerics.float32")
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=model_inputs(max_d_model=32, max_N=2), mode=dropout_modes(), seed=SEEDS)
def test_transformer_gradients_match_torch(impl, device, dtype, case: ModelInputs, mode: DropoutMode,
                                           seed: int) -> None:
    """Every parameter of the model (embeddings, encoder, decoder, projection) through project(decode(encode)),
    against nn.Embedding + nn.Transformer + nn.Linear."""
    config = {**case.describe(), "mode": mode, "seed": seed}
    note(config)
    cfg = type(case.cfg)(**{**case.cfg.kwargs(), "dropout": mode.p})
    model = randomize_parameters_(build_model(impl, cfg, device=device, dtype=dtype), seed)
    torch_model = ta.TorchTransformerModel(model, h=cfg.h, N=cfg.N, d_ff=cfg.d_ff)
    set_mode([model, torch_model], mode)
    src, tgt = as_tensor(case.src, device), as_tensor(case.tgt, device)
    src_mask, tgt_mask = as_tensor(case.src_mask, device), as_tensor(case.tgt_mask, device)

    def run(m: nn.Module) -> torch.Tensor:
        return m.project(m.decode(m.encode(src, src_mask), src_mask, tgt, tgt_mask))

    compare_gradients(model, torch_model, run, run, {}, dtype=dtype, component="Transformer", config=config,
                      label="nn.Transformer", seed=seed)


NOTHING_MAY_ATTEND = dense_attention_inputs(cross=True, max_len=16, max_d_model=32,
                                            mask_kinds=("key_padding", "random", "blog_full", "blog_key"))


def _masked_backward(impl, device: str, case: AttentionInputs, seed: int, *, rows: torch.Tensor | None
                     ) -> tuple[nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    """float32 block, q/k/v leaves, backward of ``sum(out * g)``; ``rows`` (B, Lq) zeroes g's other query rows.
    Returns the block, the q/k/v gradients and the (B, Lk) keys that no query row with a nonzero g sees in any head."""
    cfg = case.cfg
    dtype = torch.float32
    block = randomize_parameters_(mha_block(impl, cfg.d_model, cfg.h, 0.0, device, dtype), seed)
    q, k, v = (as_tensor(a, device, dtype).requires_grad_(True) for a in (case.x, case.memory,
                                                                           case.memory[:, ::-1].copy()))
    out = check_output(block(q, k, v, _on(case.mask, q)), (cfg.B, cfg.Lq, cfg.d_model),
                       component="MultiHeadAttentionBlock", config=case.describe())
    g = torch.as_tensor(cotangent(out.shape, seed), dtype=dtype, device=device)
    if rows is not None:
        g = g * rows[..., None].to(device=device, dtype=dtype)
    (out * g).sum().backward()
    full = masks.contract_mask_4d(case.mask, batch=cfg.B, heads=cfg.h, len_q=cfg.Lq, len_k=cfg.Lk)
    full = full.expand(cfg.B, cfg.h, cfg.Lq, cfg.Lk)
    live = torch.ones(cfg.B, cfg.Lq, dtype=torch.bool) if rows is None else rows.cpu()
    unseen = ~(full & live[:, None, :, None]).any(dim=1).any(dim=1)  # (B, Lk): no live query, no head
    return block, {"q": q.grad, "k": k.grad, "v": v.grad}, unseen


@pytest.mark.clause("mask.zero-weight", "mask.fully-masked-finite")
@given(case=NOTHING_MAY_ATTEND, seed=SEEDS)
def test_multi_head_attention_block_gradients_where_nothing_may_attend(impl, device, case: AttentionInputs,
                                                                       seed: int) -> None:
    """With fully masked rows allowed: every gradient is finite, and a key (value) position that no query row
    with a visible key in every head attends to gets exactly zero gradient, with the upstream gradient zero on the
    other rows (masked keys weigh exactly 0 where a row has a key; what a fully masked row holds is free)."""
    cfg = case.cfg
    note(case.describe())
    full = masks.contract_mask_4d(case.mask, batch=cfg.B, heads=cfg.h, len_q=cfg.Lq, len_k=cfg.Lk)
    rows = full.expand(cfg.B, cfg.h, cfg.Lq, cfg.Lk).any(dim=-1).all(dim=1)  # (B, Lq): a key in every head
    block, grads, unseen = _masked_backward(impl, device, case, seed, rows=rows)
    for name, grad in [*grads.items(), *((n, p.grad) for n, p in block.named_parameters())]:
        assert grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(grad).all(), f"non-finite gradient of {name}"
    for name in ("k", "v"):
        leaked = grads[name].detach().cpu()[unseen]
        assert not leaked.any(), f"masked {name} positions got gradient up to {leaked.abs().max():.3e}"


@pytest.mark.strict("a fully masked query row has zero weights, so no gradient reaches any key from it")
@pytest.mark.clause("strict.fully-masked-zero")
@given(case=NOTHING_MAY_ATTEND, seed=SEEDS)
def test_multi_head_attention_block_fully_masked_rows_pass_no_gradient(impl, device, case: AttentionInputs,
                                                                       seed: int) -> None:
    """Upstream gradient on every row, fully masked ones included: finite everywhere, and a key (value) position
    no query may attend to in any head gets exactly zero gradient."""
    note(case.describe())
    block, grads, unseen = _masked_backward(impl, device, case, seed, rows=None)
    for name, grad in [*grads.items(), *((n, p.grad) for n, p in block.named_parameters())]:
        assert grad is not None and torch.isfinite(grad).all(), f"missing or non-finite gradient of {name}"
    for name in ("k", "v"):
        leaked = grads[name].detach().cpu()[unseen]
        assert not leaked.any(), f"masked {name} positions got gradient up to {leaked.abs().max():.3e}"

