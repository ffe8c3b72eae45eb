"""The torch adapters themselves are right: PyTorch's modules loaded by ``reference.oracles.torch_adapters`` compute the
float64 NumPy oracle's function, on every torch path they can take, and the mask conversions are lossless.

The contract modules here only carry weights (randomised, non-default); nothing below runs their forward, so a
wrong adapter cannot hide behind a matching bug in the implementation. The attention projections' optional biases
(``w_q.bias``, ...) are added to the blocks where a test draws ``biased``, so their loading and naming is checked
whether or not the implementation has them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from torch import nn

from reference.oracles import numpy_ref
from reference.oracles import torch_adapters as ta
from reference.oracles import torch_names
from reference.spec.contract import ModelConfig, build_model, randomize_parameters_
from reference.kit.weights import CONTRACT_EPS, extract_weights
from tests.strategies import (WELL_CONDITIONED_SCALES, AttentionConfig, AttentionInputs, ModelInputs, attention_masks,
                              dense_attention_inputs, feed_forward_widths, model_inputs)
from tests.support import (LAYERS, SEEDS, as_tensor, assert_float64_close, counting, decoder, decoder_block,
                           encode_decode_project, encoder, encoder_block, keys_values, mha_block, model_tensors, noted,
                           rows)

pytestmark = pytest.mark.clause("kit")

DTYPE = torch.float64
#: The adapters' wiring (which weight goes where, mask shape and polarity) is scale-free and shows as O(1) relative
#: errors on well-conditioned inputs; the other scales are exercised against torch's own error in
#: test_equivalence_torch.py.
WELL_CONDITIONED = WELL_CONDITIONED_SCALES
#: torch's paths: "train" (the composite slow path), "eval" (no grad: fused kernels where torch takes them).
PATHS = st.sampled_from(("train", "eval"))
#: Sizes and scales of the attention, layer and stack inputs.
CASES = {"max_len": 32, "max_d_model": 64, "scales": WELL_CONDITIONED}


@torch.no_grad()
def with_projection_biases_(module: nn.Module, seed: int) -> nn.Module:
    """Give every attention projection (``w_q``/``w_k``/``w_v``/``w_o``) under ``module`` a random bias [d] in
    [-0.5, 0.5], where it has none (the contract's optional biases), in place. Forward is never run here, so only
    the parameters matter."""
    gen = torch.Generator().manual_seed(seed)
    for block in [m for m in module.modules() if all(hasattr(m, n) for n in numpy_ref.PROJECTIONS)]:
        for name in numpy_ref.PROJECTIONS:
            linear = getattr(block, name)
            if getattr(linear, "bias", None) is None:
                weight = linear.weight
                value = torch.rand(weight.shape[0], generator=gen, dtype=torch.float64) - 0.5
                linear.bias = nn.Parameter(value.to(device=weight.device, dtype=weight.dtype))
    return module


# --------------------------------------------------------------------------------------------------- masks
@given(case=attention_masks(), as_int=st.booleans())
def test_mha_masks_round_trip(case: tuple[AttentionConfig, str, np.ndarray | None], as_int: bool) -> None:
    """contract -> (attn_mask, key_padding_mask) -> contract is the identity on [B, h, Lq, Lk]; each blog shape
    lands where torch wants it; the SDPA mask broadcasts to the same mask. Integer masks (nonzero = attend) too."""
    cfg, kind, mask = case
    note(f"{cfg}, kind={kind}, as_int={as_int}")
    size = {"batch": cfg.B, "heads": cfg.h, "len_q": cfg.Lq, "len_k": cfg.Lk}
    given_mask = None if mask is None else torch.as_tensor(mask.astype(np.int8) * 7 if as_int else mask)
    attn_mask, kpm = ta.to_mha_masks(given_mask, **size)
    if mask is None:
        assert attn_mask is None and kpm is None and ta.to_sdpa_mask(None, **size) is None
        return
    full = torch.as_tensor(np.broadcast_to(mask, (cfg.B, cfg.h, cfg.Lq, cfg.Lk)))
    assert torch.equal(ta.from_mha_masks(attn_mask, kpm, **size), full)
    assert torch.equal(ta.to_sdpa_mask(given_mask, **size).expand(full.shape), full)
    # The blog's shapes land in torch's cheapest form; at Lq == 1 (and B == h == 1) the forms coincide. A per-head
    # mask ("random" with h > 1) has no key-padding form even at Lq == 1 (found by the thorough profile).
    per_row = kind in ("causal", "blog_shared", "random", "blog_full") and (
        cfg.Lq > 1 or kind == "random" and cfg.h > 1)
    per_batch_or_head = kind == "blog_full" and cfg.B > 1 or kind == "random" and cfg.B * cfg.h > 1
    expected = ((None, (cfg.B, cfg.Lk)) if not per_row
                else ((cfg.B * cfg.h, cfg.Lq, cfg.Lk), None) if per_batch_or_head else ((cfg.Lq, cfg.Lk), None))
    got = tuple(None if m is None else tuple(m.shape) for m in (attn_mask, kpm))
    assert got == expected, f"{kind}: torch masks of shapes {got}, expected {expected}"
    assert all(m is None or m.dtype == torch.bool for m in (attn_mask, kpm))


def test_mha_masks_reject_what_does_not_broadcast() -> None:
    with pytest.raises(ValueError, match="does not broadcast"):
        ta.to_mha_masks(torch.ones(2, 1, 1, 5, dtype=torch.bool), batch=3, heads=2, len_q=4, len_k=5)
    with pytest.raises(ValueError, match="does not broadcast"):
        ta.to_sdpa_mask(torch.ones(1, 3, 4, 4, dtype=torch.bool), batch=1, heads=2, len_q=4, len_k=4)


# --------------------------------------------------------------------------------------------------- weights
@given(case=model_inputs(), seed=SEEDS, biased=st.booleans())
def test_adapters_load_every_parameter(impl, device, case: ModelInputs, seed: int, biased: bool) -> None:
    """Every contract parameter appears, bit for bit, under its contract name in the torch model (nn.Transformer
    re-initialises what it holds: this catches loading before that), the projections' biases too when the model has
    them; the only extra torch parameters are the zero projection biases of a model without them; every LayerNorm
    carries the contract's eps and every attention the configuration's h."""
    note({**case.describe(), "biased": biased})
    model = randomize_parameters_(build_model(impl, case.cfg, device=device, dtype=DTYPE), seed)
    if biased:
        with_projection_biases_(model, seed)
    torch_model = ta.TorchTransformerModel(model, h=case.cfg.h, N=case.cfg.N, d_ff=case.cfg.d_ff)
    ours = dict(model.named_parameters())
    theirs = torch_names.params_by_contract_name(torch_model)
    assert set(theirs) == set(ours), f"missing {set(ours) - set(theirs)}, extra {set(theirs) - set(ours)}"
    for name, p in ours.items():
        assert torch.equal(theirs[name], p.detach()), f"{name} was not loaded exactly"
    extra = dict(torch_model.named_parameters())
    unmapped = torch_names.unmapped_parameters(torch_model)
    assert not (biased and unmapped), f"projection biases loaded but not mapped: {unmapped}"
    for name in unmapped:
        assert name.endswith(("in_proj_bias", "out_proj.bias")), name
        assert not extra[name].any(), f"{name} must be zero"
    assert all(m.eps == CONTRACT_EPS for m in torch_model.modules() if isinstance(m, torch.nn.LayerNorm))
    attentions = [m for m in torch_model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert all(m.dropout == 0.0 and m.num_heads == case.cfg.h for m in attentions)


# --------------------------------------------------------------------------------------------------- forward
@given(case=dense_attention_inputs(**CASES), path=PATHS, seed=SEEDS, biased=st.booleans())
def test_torch_multihead_attention_matches_numpy(impl, device, case: AttentionInputs, path: str, seed: int,
                                                 biased: bool) -> None:
    """``nn.MultiheadAttention`` (slow path; fused ``_native_multi_head_attention`` for self-attention in eval with
    even h) and the SDPA adapter, with every mask kind, with and without projection biases, against
    ``numpy_ref.multi_head_attention``."""
    cfg = case.cfg
    config = {**case.describe(), "path": path, "seed": seed, "biased": biased}
    note(config)
    block = randomize_parameters_(mha_block(impl, cfg.d_model, cfg.h, 0.0, device, DTYPE), seed)
    if biased:
        with_projection_biases_(block, seed)
    mha = ta.to_multihead_attention(block, h=cfg.h).train(path == "train")
    x = as_tensor(case.x, device, DTYPE)
    k, v = keys_values(case, x)
    mask = as_tensor(case.mask, device)
    with torch.no_grad(), counting("_native_multi_head_attention") as calls:
        out = ta.mha_forward(mha, x, k, v, mask)
        sdpa = ta.sdpa_attention(block, x, k, v, mask, h=cfg.h)
    fused = path == "eval" and case.memory is None and cfg.h % 2 == 0
    assert calls["_native_multi_head_attention"] == int(fused), dict(calls)
    oracle, _ = numpy_ref.multi_head_attention(case.x, k.cpu().numpy(), v.cpu().numpy(), case.mask,
                                               extract_weights(block), cfg.h)
    where = rows(case, case.mask, cfg.Lk)
    assert_float64_close(out, oracle, where=where, component="nn.MultiheadAttention adapter", config=config)
    assert_float64_close(sdpa, oracle, where=where, component="sdpa_attention", config=config)


@given(case=dense_attention_inputs(cross=False, **CASES), d_ff=feed_forward_widths(64), path=PATHS, seed=SEEDS)
def test_torch_encoder_layer_matches_numpy(impl, device, case: AttentionInputs, d_ff: int, path: str,
                                           seed: int) -> None:
    cfg = case.cfg
    config = {**case.describe(), "d_ff": d_ff, "path": path, "seed": seed}
    note(config)
    block = randomize_parameters_(encoder_block(impl, cfg.d_model, cfg.h, d_ff, 0.0, device, DTYPE), seed)
    layer = ta.to_encoder_layer(block, h=cfg.h).train(path == "train")
    x, mask = as_tensor(case.x, device, DTYPE), as_tensor(case.mask, device)
    with torch.no_grad():
        out = ta.encoder_forward(layer, x, mask)
    oracle = numpy_ref.encoder_block(case.x, case.mask, extract_weights(block), cfg.h, CONTRACT_EPS)
    assert_float64_close(out, oracle, where=rows(case, case.mask, cfg.Lq), component="to_encoder_layer",
                         config=config)


@given(case=dense_attention_inputs(decoder=True, **CASES), d_ff=feed_forward_widths(64), path=PATHS, seed=SEEDS)
def test_torch_decoder_layer_matches_numpy(impl, device, case: AttentionInputs, d_ff: int, path: str,
                                           seed: int) -> None:
    cfg = case.cfg
    config = {**case.describe(), "d_ff": d_ff, "path": path, "seed": seed}
    note(config)
    block = randomize_parameters_(decoder_block(impl, cfg.d_model, cfg.h, d_ff, 0.0, device, DTYPE), seed)
    layer = ta.to_decoder_layer(block, h=cfg.h).train(path == "train")
    x, memory = as_tensor(case.x, device, DTYPE), as_tensor(case.memory, device, DTYPE)
    with torch.no_grad():
        out = ta.decoder_forward(layer, x, memory, as_tensor(case.mask, device), as_tensor(case.self_mask, device))
    oracle = numpy_ref.decoder_block(case.x, case.memory, case.mask, case.self_mask, extract_weights(block), cfg.h,
                                     CONTRACT_EPS)
    where = rows(case, case.mask, cfg.Lk) & rows(case, case.self_mask, cfg.Lq)
    assert_float64_close(out, oracle, where=where, component="to_decoder_layer", config=config)


@given(case=dense_attention_inputs(cross=False, allow_fully_masked=False, **CASES), n=LAYERS,
       d_ff=feed_forward_widths(64), path=PATHS, seed=SEEDS)
def test_torch_encoder_matches_numpy(impl, device, case: AttentionInputs, n: int, d_ff: int, path: str,
                                     seed: int) -> None:
    cfg = case.cfg
    config = {**case.describe(), "N": n, "d_ff": d_ff, "path": path, "seed": seed}
    note(config)
    stack = randomize_parameters_(encoder(impl, n, cfg.d_model, cfg.h, d_ff, 0.0, device, DTYPE), seed)
    torch_stack = ta.to_encoder(stack, h=cfg.h).train(path == "train")
    with torch.no_grad():
        out = ta.encoder_forward(torch_stack, as_tensor(case.x, device, DTYPE), as_tensor(case.mask, device))
    oracle = numpy_ref.encoder(case.x, case.mask, extract_weights(stack), cfg.h, CONTRACT_EPS)
    assert_float64_close(out, oracle, component="to_encoder", config=config)


@given(case=dense_attention_inputs(decoder=True, allow_fully_masked=False, **CASES), n=LAYERS,
       d_ff=feed_forward_widths(64), path=PATHS, seed=SEEDS)
def test_torch_decoder_matches_numpy(impl, device, case: AttentionInputs, n: int, d_ff: int, path: str,
                                     seed: int) -> None:
    cfg = case.cfg
    config = {**case.describe(), "N": n, "d_ff": d_ff, "path": path, "seed": seed}
    note(config)
    stack = randomize_parameters_(decoder(impl, n, cfg.d_model, cfg.h, d_ff, 0.0, device, DTYPE), seed)
    torch_stack = ta.to_decoder(stack, h=cfg.h).train(path == "train")
    with torch.no_grad():
        out = ta.decoder_forward(torch_stack, as_tensor(case.x, device, DTYPE), as_tensor(case.memory, device, DTYPE),
                                 as_tensor(case.mask, device), as_tensor(case.self_mask, device))
    oracle = numpy_ref.decoder(case.x, case.memory, case.mask, case.self_mask, extract_weights(stack), cfg.h,
                               CONTRACT_EPS)
    assert_float64_close(out, oracle, component="to_decoder", config=config)


@given(case=model_inputs(), path=PATHS, seed=SEEDS, biased=st.booleans())
def test_torch_transformer_matches_numpy(impl, device, case: ModelInputs, path: str, seed: int,
                                         biased: bool) -> None:
    """``TorchTransformerModel`` (nn.Embedding, the NumPy sinusoid table, nn.Transformer, nn.Linear): encode,
    decode and project, and ``nn.Transformer.forward`` end to end, with and without projection biases, against
    ``numpy_ref.transformer``."""
    config = noted(case, path=path, seed=seed, biased=biased)
    model = randomize_parameters_(build_model(impl, case.cfg, device=device, dtype=DTYPE), seed)
    if biased:
        with_projection_biases_(model, seed)
    torch_model = ta.TorchTransformerModel(model, h=case.cfg.h, N=case.cfg.N, d_ff=case.cfg.d_ff).train(
        path == "train")
    src, tgt, src_mask, tgt_mask = model_tensors(case, device)
    with torch.no_grad():
        memory, decoded, logits = encode_decode_project(torch_model, src, tgt, src_mask, tgt_mask)
        end_to_end = torch_model(src, tgt, src_mask, tgt_mask)
    trace: dict[str, np.ndarray] = {}
    numpy_ref.transformer(case.src, case.tgt, case.src_mask, case.tgt_mask, extract_weights(model), case.cfg.h,
                          CONTRACT_EPS, trace=trace, N=case.cfg.N, d_ff=case.cfg.d_ff)
    assert_float64_close(memory, trace["encoder"], component="TorchTransformerModel.encode", config=config)
    assert_float64_close(decoded, trace["decoder"], component="TorchTransformerModel.decode", config=config)
    assert_float64_close(logits, trace["projection_layer"], component="TorchTransformerModel.project", config=config)
    assert_float64_close(end_to_end, trace["projection_layer"], component="nn.Transformer.forward", config=config)


@pytest.mark.parametrize("asked", [{"N": 2}, {"d_ff": 9}, {"N": 1, "d_ff": 8}], ids=["N", "d_ff", "N-d_ff"])
def test_references_take_the_architecture_from_the_constructor_call(impl, asked: dict) -> None:
    """The oracle and the torch references given the constructor call's N and d_ff never adapt to a model holding
    others: they raise ``numpy_ref.StructureMismatch`` (a skip naming build.structure), here on a model built with
    N=1, d_ff=8 and asked otherwise (the last case, asked what it holds, runs)."""
    cfg = ModelConfig(src_vocab_size=7, tgt_vocab_size=9, src_seq_len=5, tgt_seq_len=6, d_model=8, N=1, h=2,
                      dropout=0.0, d_ff=8)
    model = randomize_parameters_(build_model(impl, cfg, dtype=torch.float64), 0).eval()
    src, tgt = np.zeros((1, 3), dtype=np.int64), np.ones((1, 2), dtype=np.int64)
    calls = {"numpy_ref.transformer": lambda: numpy_ref.transformer(src, tgt, None, None, extract_weights(model),
                                                                    cfg.h, **asked),
             "TorchTransformerModel": lambda: ta.TorchTransformerModel(model, h=cfg.h, **asked)}
    for name, call in calls.items():
        if asked == {"N": cfg.N, "d_ff": cfg.d_ff}:
            call()
            continue
        with pytest.raises(numpy_ref.StructureMismatch, match="not reached because of build.structure"):
            call()
