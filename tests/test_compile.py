"""The implementation under ``torch.compile``: one graph per forward, and the compiled numbers are eager's.

* Whole-graph capture: ``torch._dynamo.explain`` of each component's forward (with and without masks) and of the
  model's ``encode``/``decode``/``project`` pipeline finds exactly one graph and no break, so ``fullgraph=True``
  compiles it. Capture is the backend-independent part of compilation, so this uses no code generation.
* Compiled == eager: a ``DecoderBlock`` (self-attention, cross-attention, feed-forward, three residual norms: every
  kind of component) compiled with ``fullgraph=True`` on the ``aot_eager`` backend (Dynamo capture plus
  AOTAutograd's forward and backward graphs, no code generation) returns eager's outputs, input gradients and
  parameter gradients for drawn values and random masks, fully masked rows included. Shapes are fixed so one
  graph serves every draw.
* Inductor (``slow``): the code-generating backend reorders and fuses arithmetic, so it is held to the suite's
  error-ratio rule instead: the compiled float32 model's error against an independent float64 oracle
  (``nn.Embedding`` + ``nn.Transformer`` + ``nn.Linear`` with the same weights) may be at most ``K`` times the
  eager float32 model's error plus the float32 floor, forward and gradients.

``pytest --compile`` (conftest) runs the rest of the suite on compiled modules; these tests compile explicitly.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from hypothesis import given, note

from reference.kit import components
from reference.oracles import torch_adapters as ta
from reference.oracles import torch_names
from reference.judge.compare import assert_close, assert_error_ratio
from reference.spec.contract import ModelConfig, build_model, construct, randomize_parameters_
from tests.strategies import AttentionConfig, AttentionInputs, fixed_shape_decoder_inputs

F32, F64 = torch.float32, torch.float64
D_MODEL, HEADS, D_FF, BATCH, LEN_Q, LEN_K = 8, 2, 16, 2, 5, 7
#: The compiled DecoderBlock's fixed shape: target length 5 attending over a memory of length 7.
BLOCK = AttentionConfig(B=BATCH, h=HEADS, d_k=D_MODEL // HEADS, Lq=LEN_Q, Lk=LEN_K)


# ----------------------------------------------------------------------------------------------- building
SIZES = ModelConfig(d_model=D_MODEL, h=HEADS, d_ff=D_FF, dropout=0.0)


def _attention(impl, device: str, dtype: torch.dtype = F32):
    return components.build(impl, "multi_head_attention", SIZES, device=device, dtype=dtype)


def _feed_forward(impl, device: str, dtype: torch.dtype = F32):
    return components.build(impl, "feed_forward", SIZES, device=device, dtype=dtype)


def _encoder_block(impl, device: str):
    return components.build(impl, "encoder_block", SIZES, device=device, dtype=F32)


def _decoder_block(impl, device: str, dtype: torch.dtype = F32):
    return components.build(impl, "decoder_block", SIZES, device=device, dtype=dtype)


def _inputs(device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """x [B, Lq, d], memory [B, Lk, d], key padding [B, 1, 1, Lk] (one padded key) and causal [1, 1, Lq, Lq]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, LEN_Q, D_MODEL, generator=gen).to(device)
    memory = torch.randn(BATCH, LEN_K, D_MODEL, generator=gen).to(device)
    padding = torch.ones(BATCH, 1, 1, LEN_K, dtype=torch.bool)
    padding[0, ..., -1] = False
    causal = torch.tril(torch.ones(LEN_Q, LEN_Q, dtype=torch.bool))[None, None]
    return {"x": x, "memory": memory, "padding": padding.to(device), "causal": causal.to(device)}


def _self_padding(t: dict[str, torch.Tensor]) -> torch.Tensor:
    return t["padding"][..., :LEN_Q]  # (B, 1, 1, Lq): a key padding mask for self-attention over x


#: name -> (builder, call): ``call(module, inputs, masked)`` runs the component's forward.
CASES: dict[str, tuple[Callable, Callable[[Any, dict, bool], torch.Tensor]]] = {
    "LayerNormalization": (
        lambda impl, device: construct(impl.LayerNormalization, D_MODEL, device=device, dtype=F32),
        lambda m, t, masked: m(t["x"])),
    "FeedForwardBlock": (_feed_forward, lambda m, t, masked: m(t["x"])),
    "MultiHeadAttentionBlock": (
        _attention, lambda m, t, masked: m(t["x"], t["memory"], t["memory"], t["padding"] if masked else None)),
    "EncoderBlock": (_encoder_block, lambda m, t, masked: m(t["x"], _self_padding(t) if masked else None)),
    "DecoderBlock": (
        _decoder_block, lambda m, t, masked: m(t["x"], t["memory"], t["padding"] if masked else None,
                                               t["causal"] if masked else None)),
}  # Encoder, Decoder, embeddings, positions and projection: in the pipeline test below


UNMASKED = ("LayerNormalization", "FeedForwardBlock")


def _explain(fn: Callable, *args: Any):
    explanation = torch._dynamo.explain(fn)(*args)
    reasons = "\n".join(f"  {r.reason}" for r in explanation.break_reasons)
    return explanation, reasons


#: (component, masked): attention-bearing components with and without masks, the others once.
CAPTURE_CASES = [pytest.param(name, masked, id=f"{name}-{'mask' if masked else 'no_mask'}")
                 for name in CASES for masked in ((False,) if name in UNMASKED else (False, True))]


# ----------------------------------------------------------------------------------------------- capture
@pytest.mark.strict("each module compiles to one graph without breaks")
@pytest.mark.clause("strict.one-graph")
@pytest.mark.parametrize(("component", "masked"), CAPTURE_CASES)
def test_component_forward_compiles_to_one_graph(impl, device: str, component: str, masked: bool) -> None:
    """Dynamo captures the component's forward as exactly one graph: no graph break, so fullgraph=True works."""
    build, call = CASES[component]
    module = build(impl, device)
    t = _inputs(device)
    explanation, reasons = _explain(lambda: call(module, t, masked))
    assert explanation.graph_count == 1 and not explanation.break_reasons, (
        f"{component} forward ({'with' if masked else 'without'} masks) is captured as "
        f"{explanation.graph_count} graphs with {len(explanation.break_reasons)} breaks:\n{reasons}")


@pytest.mark.strict("the whole encode/decode/project pipeline compiles to one graph")
@pytest.mark.clause("strict.one-graph")
def test_transformer_pipeline_compiles_to_one_graph(impl, device: str) -> None:
    """``project(decode(encode(src, src_mask), src_mask, tgt, tgt_mask))`` is one graph (N=2, both masks): the
    Encoder and Decoder stacks, embeddings, positional encodings and projection included."""
    cfg = ModelConfig(src_vocab_size=11, tgt_vocab_size=13, src_seq_len=LEN_K, tgt_seq_len=LEN_Q, d_model=D_MODEL,
                      N=2, h=HEADS, dropout=0.0, d_ff=D_FF)
    model = build_model(impl, cfg, device=device, dtype=F32).eval()
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(0, 11, (BATCH, LEN_K), generator=gen).to(device)
    tgt = torch.randint(0, 13, (BATCH, LEN_Q), generator=gen).to(device)
    t = _inputs(device)

    def pipeline(src, tgt, src_mask, tgt_mask):
        return model.project(model.decode(model.encode(src, src_mask), src_mask, tgt, tgt_mask))

    explanation, reasons = _explain(pipeline, src, tgt, t["padding"], t["causal"])
    assert explanation.graph_count == 1 and not explanation.break_reasons, (
        f"encode/decode/project is captured as {explanation.graph_count} graphs with "
        f"{len(explanation.break_reasons)} breaks:\n{reasons}")


# ----------------------------------------------------------------------------------------------- compiled == eager
@pytest.fixture(scope="session")
def compiled_decoder_block(impl, device: str):
    """(eager DecoderBlock with random parameters, the same block under torch.compile(aot_eager, fullgraph))."""
    block = randomize_parameters_(_decoder_block(impl, device), seed=3)
    torch._dynamo.reset()
    return block, torch.compile(block, backend="aot_eager", fullgraph=True)


def _forward_backward(fn: Callable, block, inputs: AttentionInputs, device: str):
    """Output, d(out . g)/d(x, memory) and the parameter gradients (by name), float32."""
    x = torch.tensor(inputs.x, dtype=F32, device=device, requires_grad=True)
    memory = torch.tensor(inputs.memory, dtype=F32, device=device, requires_grad=True)
    src_mask = torch.as_tensor(inputs.mask, device=device)
    tgt_mask = torch.as_tensor(inputs.self_mask, device=device)
    for p in block.parameters():
        p.grad = None
    out = fn(x, memory, src_mask, tgt_mask)
    g = torch.linspace(-1.0, 1.0, out.numel(), dtype=F32, device=device).reshape(out.shape)
    out.backward(g)
    grads = {"x": x.grad, "memory": memory.grad}
    grads.update({name: p.grad for name, p in block.named_parameters()})
    return out.detach(), grads


@pytest.mark.clause("module.compile")  # a consistency check (compiled vs eager), not an equivalence: no decoder clause
@given(inputs=fixed_shape_decoder_inputs(BLOCK))
def test_decoder_block_compiled_matches_eager(compiled_decoder_block, device: str, inputs: AttentionInputs) -> None:
    """The aot_eager-compiled DecoderBlock gives eager's outputs and gradients (inputs and every parameter)."""
    note(inputs.describe())
    block, compiled = compiled_decoder_block
    cfg = {**inputs.describe(), "device": device, "backend": "aot_eager"}
    out, grads = _forward_backward(block, block, inputs, device)
    out_c, grads_c = _forward_backward(compiled, block, inputs, device)
    assert_close(out_c, out, component="compiled DecoderBlock", config=cfg, expected_from_impl=True)
    for name, grad in grads.items():
        assert grads_c[name] is not None, f"compiled DecoderBlock: no gradient for {name}"
        assert_close(grads_c[name], grad, component=f"compiled DecoderBlock d/d{name}", config=cfg, grad=True,
                     expected_from_impl=True)


@pytest.mark.clause("module.compile")  # compiled vs its own eager run: consistency only
@pytest.mark.slow
def test_transformer_inductor_error_is_within_eager_error_ratio(impl, device: str) -> None:
    """Inductor-compiled float32 forward and gradients: error vs float64 <= K * eager float32 error + floor."""
    cfg = ModelConfig(src_vocab_size=11, tgt_vocab_size=13, src_seq_len=LEN_K, tgt_seq_len=LEN_Q, d_model=D_MODEL,
                      N=1, h=HEADS, dropout=0.0, d_ff=D_FF)
    model = randomize_parameters_(build_model(impl, cfg, device=device, dtype=F32), seed=5)
    # The oracle is independent of the implementation: nn.Embedding + nn.Transformer + nn.Linear holding the same
    # (float32-exact) weights, run in float64, its gradients under the contract's parameter names.
    reference64 = ta.TorchTransformerModel(model, h=cfg.h, N=cfg.N, d_ff=cfg.d_ff).to(F64)
    gen = torch.Generator().manual_seed(2)
    src = torch.randint(0, 11, (BATCH, LEN_K), generator=gen).to(device)
    tgt = torch.randint(0, 13, (BATCH, LEN_Q), generator=gen).to(device)
    t = _inputs(device)

    def loss_and_grads(m, fn, names=lambda m: {n: p.grad for n, p in m.named_parameters()}):
        m.zero_grad(set_to_none=True)
        logits = fn(m, src, tgt, t["padding"], t["causal"])
        (logits * torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype, device=device).view_as(logits)).sum(
            ).backward()
        return logits.detach(), names(m)

    def pipeline(m, src, tgt, src_mask, tgt_mask):
        return m.project(m.decode(m.encode(src, src_mask), src_mask, tgt, tgt_mask))

    torch._dynamo.reset()
    compiled = torch.compile(pipeline, backend="inductor", fullgraph=True)
    oracle, oracle_grads = loss_and_grads(reference64, pipeline, torch_names.grads_by_contract_name)
    assert set(oracle_grads) == {n for n, _ in model.named_parameters()}, "nn.Transformer reference: names differ"
    eager, eager_grads = loss_and_grads(model, pipeline)
    out, grads = loss_and_grads(model, compiled)
    info = {"device": device, "backend": "inductor", "N": 1, "d_model": D_MODEL}
    assert_error_ratio(out, eager, oracle, component="inductor-compiled Transformer logits", dtype=F32, config=info,
                       label="eager float32")
    for name, grad in grads.items():
        assert_error_ratio(grad, eager_grads[name], oracle_grads[name], dtype=F32, config=info,
                           component=f"inductor-compiled Transformer d/d{name}", label="eager float32")
