"""The low-precision lane: float16, bfloat16, TF32 and autocast, forward and backward, and the SDPA backends.

Every comparison uses the error-ratio rule against the float64 oracle: the implementation's error may be at most
``K`` times PyTorch's own error in the same precision on the same inputs and weights, plus a floor. bfloat16 and
autocast run on CPU (and in CI); float16, TF32 and the fused kernels run where the device has them. The CUDA cases
carry the ``cuda`` marker and skip with a reason on machines without a GPU.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, note
from hypothesis import strategies as st

from reference.oracles import numpy_ref, torch_ref
from reference.oracles import masks, torch_names
from reference.oracles import torch_adapters as ta
from reference.judge.compare import (NonFiniteReference, assert_error_ratio, assert_l2_error_ratio, check_output,
                                     to_f64)
from reference.spec.contract import ModelConfig, build_model, construct, per_head_masks, randomize_parameters_
from reference.judge.precision import diagnose, diagnose_check, explained
from reference.kit.weights import CONTRACT_EPS, extract_weights
from tests.strategies import AttentionConfig, attention_configs
from tests.support import kept_weights

#: (dtype, TF32 on): the precisions of this lane. float32 with TF32 exists only on CUDA.
PRECISIONS = [
    pytest.param((torch.float32, False), id="float32"),
    pytest.param((torch.float32, True), id="float32-tf32"),
    pytest.param((torch.float16, False), id="float16"),
    pytest.param((torch.bfloat16, False), id="bfloat16"),
]


@pytest.fixture(scope="session", params=PRECISIONS)
def precision(request: pytest.FixtureRequest, device: str) -> tuple[torch.dtype, bool]:
    dtype, tf32 = request.param
    if tf32 and device != "cuda":
        pytest.skip("TF32 matmuls exist only on CUDA")
    return dtype, tf32


@contextlib.contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 in CUDA matmuls and convolutions for the duration."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _inputs(cfg: AttentionConfig, seed: int, *, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.B, cfg.Lq, cfg.d_model, generator=gen, dtype=torch.float64)
    memory = torch.randn(cfg.B, cfg.Lk, cfg.d_model, generator=gen, dtype=torch.float64)
    return x.to(device, dtype), memory.to(device, dtype)


def _config(precision: tuple[torch.dtype, bool], device: str, **sizes) -> dict:
    dtype, tf32 = precision
    return {"device": device, "dtype": str(dtype).removeprefix("torch."), "tf32": tf32, **sizes}


@pytest.mark.clause("mha.formula", "numerics.float32", "numerics.tf32", "numerics.16bit-accuracy")
@given(cfg=attention_configs(max_len=10, max_d_model=32), seed=st.integers(0, 2**16))
def test_multi_head_attention_low_precision_within_torch_error(impl, device, precision, cfg, seed) -> None:
    """Forward and backward of the attention block vs ``nn.MultiheadAttention`` in the same precision."""
    dtype, tf32 = precision
    config = _config(precision, device, B=cfg.B, h=cfg.h, d_k=cfg.d_k, Lq=cfg.Lq, Lk=cfg.Lk, seed=seed)
    note(config)
    block = randomize_parameters_(construct(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, 0.0,
                                            device=device, dtype=dtype), seed)
    mha = ta.to_multihead_attention(block, h=cfg.h)
    mask = torch.tril(torch.ones(cfg.Lq, cfg.Lk, dtype=torch.bool), diagonal=cfg.Lk - cfg.Lq)[None, None]
    where = masks.attended_rows(mask, batch=cfg.B, heads=cfg.h, len_q=cfg.Lq, len_k=cfg.Lk)
    x, memory = _inputs(cfg, seed, device=device, dtype=dtype)
    x.requires_grad_(True)
    x_torch = x.detach().clone().requires_grad_(True)
    with tf32_matmuls(tf32):
        out = block(x, memory, memory, mask.to(device))
        out_torch = ta.mha_forward(mha, x_torch, memory, memory, mask)
    oracle, _ = numpy_ref.multi_head_attention(to_f64(x).numpy(), to_f64(memory).numpy(), to_f64(memory).numpy(),
                                               mask.numpy(), extract_weights(block), cfg.h)
    check_output(out, out_torch.shape, component="MultiHeadAttentionBlock", config=config)
    assert torch.isfinite(out).all(), "non-finite attention output"
    with explained(dtype, lambda: diagnose(
            block, (x, memory, memory, mask.to(device)), dtype=dtype, oracle=oracle, torch_out=out_torch, where=where,
            torch_call=lambda m, *a: ta.mha_forward(ta.to_multihead_attention(m, h=cfg.h), *a))):
        assert_error_ratio(out, out_torch, oracle, component="MultiHeadAttentionBlock", dtype=dtype, config=config,
                           where=where, label="nn.MultiheadAttention")
    # Backward: gradients w.r.t. the query input, against the float64 torch module (autograd's oracle).
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    grad_out = grad_out * where.to(torch.float64)  # rows torch leaves NaN contribute nothing
    (out * grad_out.to(device, dtype)).sum().backward()
    (torch.nan_to_num(out_torch) * grad_out.to(device, dtype)).sum().backward()
    mha64 = ta.to_multihead_attention(construct(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, 0.0,
                                                device="cpu", dtype=torch.float64), h=cfg.h)
    mha64.load_state_dict({k: v.double().cpu() for k, v in mha.state_dict().items()})
    x64 = to_f64(x).requires_grad_(True)
    out64 = ta.mha_forward(mha64, x64, to_f64(memory), to_f64(memory), mask)
    (torch.nan_to_num(out64) * grad_out).sum().backward()
    assert_error_ratio(x.grad, x_torch.grad, x64.grad, component="MultiHeadAttentionBlock d(out)/d(q)",
                       dtype=dtype, config=config, label="nn.MultiheadAttention")


def _position_wise_case(impl, precision, cfg, seed: int, device: str) -> tuple[torch.Tensor, dict]:
    """The input of the position-wise tests, ``x * 3 + 5`` (a common offset: LayerNorm's variance must not cancel in
    low precision), and the case's config."""
    dtype, _ = precision
    config = _config(precision, device, B=cfg.B, d_model=cfg.d_model, L=cfg.Lq, seed=seed)
    note(config)
    x, _ = _inputs(cfg, seed, device=device, dtype=dtype)
    return x * 3 + 5, config


@pytest.mark.clause("ln.biased-variance", "numerics.float32", "numerics.tf32", "numerics.16bit-accuracy")
@given(cfg=attention_configs(max_len=10, max_d_model=32), seed=st.integers(0, 2**16))
def test_layer_norm_low_precision_within_torch_error(impl, device, precision, cfg, seed) -> None:
    """LayerNormalization in the lane's dtype within the error of ``F.layer_norm`` on the same weights, both
    against the float64 formula."""
    dtype, tf32 = precision
    x, config = _position_wise_case(impl, precision, cfg, seed, device)
    norm = randomize_parameters_(construct(impl.LayerNormalization, cfg.d_model, device=device, dtype=dtype), seed)
    with torch.no_grad(), tf32_matmuls(tf32):
        got = norm(x)
        expected = torch_ref.layer_norm(x, norm.alpha, norm.bias, CONTRACT_EPS)
    w = extract_weights(norm)
    oracle = numpy_ref.layer_norm(to_f64(x).numpy(), w["alpha"], w["bias"], CONTRACT_EPS)
    with explained(dtype, lambda: diagnose(
            norm, (x,), dtype=dtype, oracle=oracle, torch_out=expected,
            torch_call=lambda m, a: torch_ref.layer_norm(a, m.alpha, m.bias, CONTRACT_EPS))):
        assert_error_ratio(got, expected, oracle, component="LayerNormalization", dtype=dtype, config=config,
                           label="F.layer_norm")


@pytest.mark.clause("ffn.formula", "numerics.float32", "numerics.tf32", "numerics.16bit-accuracy")
@given(cfg=attention_configs(max_len=10, max_d_model=32), seed=st.integers(0, 2**16))
def test_feed_forward_low_precision_within_torch_error(impl, device, precision, cfg, seed) -> None:
    """FeedForwardBlock (eval) in the lane's dtype within the error of ``F.linear``/``F.relu`` on the same weights,
    both against the float64 formula."""
    dtype, tf32 = precision
    x, config = _position_wise_case(impl, precision, cfg, seed, device)
    ff = randomize_parameters_(construct(impl.FeedForwardBlock, cfg.d_model, 2 * cfg.d_model, 0.0,
                                         device=device, dtype=dtype), seed).eval()
    with torch.no_grad(), tf32_matmuls(tf32):
        got = ff(x)
        expected = torch_ref.feed_forward(x, dict(ff.named_parameters()))
    oracle = numpy_ref.feed_forward(to_f64(x).numpy(), extract_weights(ff))
    with explained(dtype, lambda: diagnose(
            ff, (x,), dtype=dtype, oracle=oracle, torch_out=expected,
            torch_call=lambda m, a: torch_ref.feed_forward(a, dict(m.named_parameters())))):
        assert_error_ratio(got, expected, oracle, component="FeedForwardBlock", dtype=dtype, config=config,
                           label="F.linear")


SMALL_MODEL = ModelConfig(src_vocab_size=17, tgt_vocab_size=19, src_seq_len=12, tgt_seq_len=12, d_model=32, N=2, h=4,
                          dropout=0.1, d_ff=64)
#: The architecture the references take from the constructor call (never from the model under test).
SMALL_ARCH = {"h": SMALL_MODEL.h, "N": SMALL_MODEL.N, "d_ff": SMALL_MODEL.d_ff}


def _model_inputs(seed: int, device: str) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    B, Ls, Lt = 3, 9, 7
    src = torch.randint(0, SMALL_MODEL.src_vocab_size, (B, Ls), generator=gen)
    tgt = torch.randint(0, SMALL_MODEL.tgt_vocab_size, (B, Lt), generator=gen)
    lengths = torch.randint(1, Ls + 1, (B,), generator=gen)
    src_mask = (torch.arange(Ls)[None, :] < lengths[:, None])[:, None, None, :]  # [B, 1, 1, Ls]
    tgt_mask = torch.tril(torch.ones(1, Lt, Lt, dtype=torch.bool))  # [1, Lt, Lt]
    return src.to(device), tgt.to(device), src_mask.to(device), tgt_mask.to(device)


def _logits(model, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor,
            tgt_mask: torch.Tensor) -> torch.Tensor:
    """``project(decode(encode(src), tgt))``: the contract model's logits, or ``TorchTransformerModel``'s."""
    return model.project(model.decode(model.encode(src, src_mask), src_mask, tgt, tgt_mask))


def _transformer_run(impl, device: str, dtype: torch.dtype, tf32: bool, seed: int) -> dict:
    """Logits and every parameter's gradient: the implementation and ``nn.Transformer`` in ``dtype``, torch in
    float64 (the gradient oracle) and the NumPy oracle's logits, for one seed of weights and inputs."""
    model = randomize_parameters_(build_model(impl, SMALL_MODEL, device=device, dtype=dtype), seed).eval()
    reference = ta.TorchTransformerModel(model, **SMALL_ARCH).eval()
    src, tgt, src_mask, tgt_mask = _model_inputs(seed, device)
    with tf32_matmuls(tf32):
        logits = model.project(model.decode(model.encode(src, src_mask), src_mask, tgt, tgt_mask))
        torch_logits = reference.project(reference.decode(reference.encode(src, src_mask), src_mask, tgt, tgt_mask))
        logits.float().logsumexp(-1).sum().backward()
        torch_logits.float().logsumexp(-1).sum().backward()
    oracle = numpy_ref.transformer(src.cpu().numpy(), tgt.cpu().numpy(), src_mask.cpu().numpy(),
                                   tgt_mask.cpu().numpy(), extract_weights(model), **SMALL_ARCH)
    reference64 = ta.TorchTransformerModel(model, **SMALL_ARCH).to("cpu", torch.float64).eval()
    reference64.load_state_dict({k: v.to("cpu", torch.float64) for k, v in reference.state_dict().items()})
    reference64.project(reference64.decode(reference64.encode(src.cpu(), src_mask.cpu()), src_mask.cpu(),
                                           tgt.cpu(), tgt_mask.cpu())).logsumexp(-1).sum().backward()
    grads = {}
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: missing or non-finite gradient"
        grads[name] = p.grad
    return {"logits": logits, "torch_logits": torch_logits, "oracle": oracle, "grads": grads, "model": model,
            "inputs": (src, tgt, src_mask, tgt_mask),
            "grads_torch": torch_names.grads_by_contract_name(reference), "grads64": torch_names.grads_by_contract_name(reference64)}


@pytest.mark.clause("transformer.compose", "numerics.float32", "numerics.tf32", "numerics.16bit-accuracy")
@pytest.mark.parametrize("seed", [0, 1])
def test_transformer_low_precision_within_torch_error(impl, device, precision, seed: int) -> None:
    """The whole model (eval, dropout built in) vs ``nn.Transformer`` in the same precision: logits, and in
    float32 every parameter's gradient element by element."""
    dtype, tf32 = precision
    config = _config(precision, device, seed=seed, **SMALL_MODEL.kwargs())
    run = _transformer_run(impl, device, dtype, tf32, seed)
    with explained(dtype, lambda: diagnose(
            run["model"], run["inputs"], dtype=dtype, oracle=run["oracle"], torch_out=run["torch_logits"],
            call=_logits, torch_call=lambda m, *a: _logits(ta.TorchTransformerModel(m, **SMALL_ARCH).eval(), *a))):
        assert_error_ratio(run["logits"], run["torch_logits"], run["oracle"], component="Transformer logits",
                           dtype=dtype, config=config, label="nn.Transformer")
    if dtype == torch.float32:
        for name, grad in run["grads"].items():
            assert_error_ratio(grad, run["grads_torch"][name], run["grads64"][name],
                               component=f"d(logits)/d({name})", dtype=dtype, config=config, label="nn.Transformer")


#: 16-bit full-model gradients are judged on the median over this many seeds (docs/tolerances.md).
GRAD_16BIT_SEEDS = 5


@pytest.mark.clause("transformer.compose", "numerics.float32", "numerics.tf32", "numerics.16bit-accuracy")
def test_transformer_16bit_gradients_within_torch_error(impl, device, precision) -> None:
    """Every parameter's gradient in float16/bfloat16, as one relative-L2 error, median over seeds.

    In 16 bits a ReLU pre-activation within one rounding of 0 flips its gate and moves a whole gradient row, so
    one seed measures which run flipped more gates (impl/torch ratios 0.3-46 over 12 seeds, median 1.0); the
    median over seeds measures accuracy, and a real gradient bug fails every seed.
    """
    dtype, tf32 = precision
    if dtype == torch.float32:
        pytest.skip("float32 gradients are compared element by element in test_transformer_low_precision_...")
    usage = []
    for seed in range(GRAD_16BIT_SEEDS):
        run = _transformer_run(impl, device, dtype, tf32, seed)
        config = _config(precision, device, seed=seed, **SMALL_MODEL.kwargs())
        try:
            assert_l2_error_ratio(run["grads"], run["grads_torch"], run["grads64"],
                                  component="d(logits)/d(parameters)", dtype=dtype, config=config,
                                  label="nn.Transformer")
            usage.append((0.0, None))
        except NonFiniteReference:
            raise  # a non-finite reference is a test error (reference.judge.compare), never a failed seed
        except AssertionError as exc:
            usage.append((1.0, str(exc)))
    failures = [msg for failed, msg in usage if failed]
    assert len(failures) <= GRAD_16BIT_SEEDS // 2, (
        f"{len(failures)} of {GRAD_16BIT_SEEDS} seeds exceed the error-ratio tolerance (the median must not):\n"
        + "\n".join(failures))


@pytest.mark.clause("numerics.autocast")
@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_transformer_under_autocast_within_torch_error(impl, device, autocast_dtype: torch.dtype) -> None:
    """A float32 model under ``torch.autocast`` vs ``nn.Transformer`` under the same autocast."""
    if device == "cpu" and autocast_dtype == torch.float16:
        pytest.skip("CPU autocast to float16 is not a configuration PyTorch recommends; bfloat16 covers CPU")
    config = {"device": device, "autocast": str(autocast_dtype), **SMALL_MODEL.kwargs()}
    model = randomize_parameters_(build_model(impl, SMALL_MODEL, device=device), 3).eval()
    reference = ta.TorchTransformerModel(model, **SMALL_ARCH).eval()
    src, tgt, src_mask, tgt_mask = _model_inputs(3, device)
    with torch.no_grad(), torch.autocast(device_type=device, dtype=autocast_dtype):
        logits = model.project(model.decode(model.encode(src, src_mask), src_mask, tgt, tgt_mask))
        torch_logits = reference.project(reference.decode(reference.encode(src, src_mask), src_mask, tgt, tgt_mask))
    oracle = numpy_ref.transformer(src.cpu().numpy(), tgt.cpu().numpy(), src_mask.cpu().numpy(),
                                   tgt_mask.cpu().numpy(), extract_weights(model), **SMALL_ARCH)
    assert logits.dtype == torch_logits.dtype, f"autocast output dtype {logits.dtype} != torch's {torch_logits.dtype}"
    assert_error_ratio(logits, torch_logits, oracle, component="Transformer logits under autocast",
                       dtype=autocast_dtype, config=config, label="nn.Transformer")


def _sdpa_backends() -> list:
    try:
        from torch.nn.attention import SDPBackend
    except ImportError:  # torch < 2.3
        return [pytest.param(None, id="sdpa_kernel-unavailable")]
    names = ("MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
    return [pytest.param(getattr(SDPBackend, n), id=n.lower()) for n in names if hasattr(SDPBackend, n)]


@pytest.mark.clause("mha.static-attention", "numerics.float32", "numerics.tf32", "numerics.16bit-accuracy")
@pytest.mark.parametrize("backend", _sdpa_backends())
@given(cfg=attention_configs(max_len=12, max_d_model=64, self_attention=False), seed=st.integers(0, 2**16))
def test_attention_within_error_of_each_sdpa_backend(impl, device, precision, backend, cfg, seed) -> None:
    """The block vs its own projections around ``F.scaled_dot_product_attention`` forced onto one backend."""
    if backend is None:
        pytest.skip("torch.nn.attention.sdpa_kernel needs torch >= 2.3")
    from torch.nn.attention import sdpa_kernel
    dtype, tf32 = precision
    config = _config(precision, device, backend=backend.name, B=cfg.B, h=cfg.h, d_k=cfg.d_k, Lq=cfg.Lq, Lk=cfg.Lk)
    note(config)
    block = randomize_parameters_(construct(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, 0.0,
                                            device=device, dtype=dtype), seed).eval()
    x, memory = _inputs(cfg, seed, device=device, dtype=dtype)
    with torch.no_grad(), tf32_matmuls(tf32):
        out = block(x, memory, memory, None)
        try:
            with sdpa_kernel(backend):
                out_sdpa = ta.sdpa_attention(block, x, memory, memory, None, h=cfg.h)
        except RuntimeError as exc:
            if "No viable backend" in str(exc) or "not available" in str(exc):
                pytest.skip(f"SDPA backend {backend.name} does not run {dtype} on {device} (d_k={cfg.d_k}): "
                            f"{str(exc).splitlines()[0][:120]}")
            raise
    oracle, _ = numpy_ref.multi_head_attention(to_f64(x).numpy(), to_f64(memory).numpy(), to_f64(memory).numpy(),
                                               None, extract_weights(block), cfg.h)
    with explained(dtype, lambda: diagnose(
            block, (x, memory, memory, None), dtype=dtype, oracle=oracle, torch_out=out_sdpa,
            torch_call=lambda m, *a: ta.sdpa_attention(m, *a, h=cfg.h))):
        assert_error_ratio(out, out_sdpa, oracle, component="MultiHeadAttentionBlock", dtype=dtype, config=config,
                           label=f"SDPA[{backend.name}]")


#: Query and key entries ~ N(0, SHARPNESS^2): scores of standard deviation SHARPNESS^2 = 16, so each row's softmax
#: is peaked, as in trained models. There the softmax backward, P * (dP - sum(P * dP)), cancels, and attention
#: computed in 16 bits itself loses digits that float32 accumulation keeps.
SHARPNESS = 4.0
#: Fixed sizes, large enough that a relative L2 error over ~3 * 4 * 4 * 28 * 8 elements measures accuracy rather
#: than luck: over 120 draws (Lq, Lk in [24, 32]) correct implementations stay <= 0.53x torch's error, attention in
#: 16 bits itself >= 2.41x (float16) and >= 2.91x (bfloat16).
SHARP = AttentionConfig(B=4, h=4, d_k=8, Lq=0, Lk=0)


@pytest.mark.clause("mha.static-attention", "numerics.float32", "numerics.tf32", "numerics.16bit-accuracy")
@given(len_q=st.integers(24, 32), len_k=st.integers(24, 32), seed=st.integers(0, 2**16))
def test_attention_16bit_gradients_within_sdpa_error(impl, device, precision, len_q, len_k, seed) -> None:
    """The attention core's gradients d/d(query, key, value) in float16/bfloat16, over sharp attention with key
    padding, against float64: relative L2 error at most ``K`` times ``F.scaled_dot_product_attention``'s own in
    the same dtype on the same inputs. Every example counts (no median, no retries): attention has no ReLU gate to
    flip, so the ratio is stable. No floor: the floor exists for a torch error that happens to vanish, and this one
    cannot (every gradient is rounded to the 16-bit dtype: torch's relative L2 error measured 0.4-1.0 eps)."""
    dtype, tf32 = precision
    if dtype == torch.float32:
        pytest.skip("float32 attention gradients are compared element by element in tests/test_gradients.py")
    B, h, d_k = SHARP.B, SHARP.h, SHARP.d_k
    config = _config(precision, device, B=B, h=h, d_k=d_k, Lq=len_q, Lk=len_k, seed=seed, sharpness=SHARPNESS)
    note(config)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, h, len_q, d_k, generator=gen, dtype=torch.float64) * SHARPNESS
    k = torch.randn(B, h, len_k, d_k, generator=gen, dtype=torch.float64) * SHARPNESS
    v = torch.randn(B, h, len_k, d_k, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, len_k + 1, (B,), generator=gen)
    mask = (torch.arange(len_k)[None, :] < lengths[:, None])[:, None, None, :].to(device)
    g = torch.randn(B, h, len_q, d_k, generator=gen, dtype=torch.float64)
    # Inputs rounded to the 16-bit dtype first, so all three runs start from the same values.
    q, k, v = (t.to(dtype).to(torch.float64) for t in (q, k, v))

    def grads(fn, dt: torch.dtype) -> dict[str, torch.Tensor]:
        leaves = [t.to(device, dt).requires_grad_() for t in (q, k, v)]
        with tf32_matmuls(tf32):
            fn(*leaves).backward(g.to(device, dt))
        return {name: t.grad for name, t in zip(("query", "key", "value"), leaves)}

    def sdpa(a, b, c):
        return F.scaled_dot_product_attention(a, b, c, attn_mask=mask)

    ours = grads(lambda a, b, c: impl.MultiHeadAttentionBlock.attention(a, b, c, mask, None)[0], dtype)
    theirs = grads(sdpa, dtype)
    oracle = grads(sdpa, torch.float64)
    with explained(dtype, lambda: diagnose(
            lambda a, b, c: impl.MultiHeadAttentionBlock.attention(a, b, c, mask, None)[0],
            [t.to(device, dtype) for t in (q, k, v)], dtype=dtype, oracle=oracle, torch_out=theirs, l2=True,
            floor_eps=0.0, grad=True, call=lambda fn, *qkv: _leaf_grads(fn, qkv, g),
            torch_call=lambda fn, *qkv: _leaf_grads(sdpa, qkv, g))):
        assert_l2_error_ratio(ours, theirs, oracle, component="MultiHeadAttentionBlock.attention d/d(query, key, "
                              "value)", dtype=dtype, config=config, label="F.scaled_dot_product_attention",
                              floor_eps=0.0)


def _leaf_grads(fn, qkv: tuple[torch.Tensor, ...], g: torch.Tensor) -> dict[str, torch.Tensor]:
    """d/d(query, key, value) of ``fn(q, k, v)`` against the cotangent ``g``, from fresh leaves (the diagnosis)."""
    leaves = [t.detach().requires_grad_() for t in qkv]
    fn(*leaves).backward(g.to(leaves[0].device, leaves[0].dtype))
    return {name: t.grad for name, t in zip(("query", "key", "value"), leaves)}


@pytest.mark.clause("mha.formula", "numerics.float32", "numerics.tf32", "numerics.16bit-accuracy")
@given(cfg=attention_configs(max_len=12, max_d_model=64, self_attention=True), seed=st.integers(0, 2**16))
def test_attention_within_error_of_multihead_attention_fast_path(impl, device, precision, cfg, seed) -> None:
    """Self-attention with a key padding mask in eval/no-grad: ``nn.MultiheadAttention``'s fused fast path."""
    dtype, tf32 = precision
    config = _config(precision, device, path="fast", B=cfg.B, h=cfg.h, d_k=cfg.d_k, L=cfg.Lq, seed=seed)
    note(config)
    block = randomize_parameters_(construct(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, 0.0,
                                            device=device, dtype=dtype), seed).eval()
    mha = ta.to_multihead_attention(block, h=cfg.h).eval()
    x, _ = _inputs(cfg, seed, device=device, dtype=dtype)
    lengths = torch.randint(1, cfg.Lq + 1, (cfg.B,), generator=torch.Generator().manual_seed(seed))
    mask = (torch.arange(cfg.Lq)[None, :] < lengths[:, None])[:, None, None, :]
    with torch.no_grad(), tf32_matmuls(tf32):
        out = block(x, x, x, mask.to(device))
        out_torch = ta.mha_forward(mha, x, x, x, mask)
    oracle, _ = numpy_ref.multi_head_attention(*(to_f64(x).numpy(),) * 3, mask.numpy(), extract_weights(block), cfg.h)
    with explained(dtype, lambda: diagnose(
            block, (x, x, x, mask.to(device)), dtype=dtype, oracle=oracle, torch_out=out_torch,
            torch_call=lambda m, *a: ta.mha_forward(ta.to_multihead_attention(m, h=cfg.h).eval(), *a))):
        assert_error_ratio(out, out_torch, oracle, component="MultiHeadAttentionBlock", dtype=dtype, config=config,
                           label="nn.MultiheadAttention fast path")


#: Input scales of the 16-bit masking test: at 1 the scores fit every dtype (masking semantics in 16 bits); at 1e3
#: they reach ~1e6, far past float16's 65504 (a range finding: torch's fused kernels survive it, its unfused
#: ``nn.MultiheadAttention`` path computes 16-bit scores in 16 bits too).
HALF_MASK_SCALES = [pytest.param(1.0, id="in-range", marks=pytest.mark.clause("numerics.16bit-semantics")),
                    pytest.param(1e3, id="past-range", marks=pytest.mark.clause("numerics.16bit-range"))]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("scale", HALF_MASK_SCALES)
@given(cfg=attention_configs(max_len=10, max_d_model=32), seed=st.integers(0, 2**16))
def test_attention_masks_in_half_precision_stay_finite(impl, device, dtype, cfg, seed, scale) -> None:
    """float16/bfloat16 masks: no overflow, no NaN; masked keys of a row with a visible key weigh exactly 0; fully
    masked rows finite. In range: ``numerics.16bit-semantics``; scores past 65504: ``numerics.16bit-range``."""
    block = randomize_parameters_(construct(impl.MultiHeadAttentionBlock, cfg.d_model, cfg.h, 0.0,
                                            device=device, dtype=dtype), seed).eval()
    x, memory = _inputs(cfg, seed, device=device, dtype=dtype)
    x, memory = x * scale, memory * scale  # scores up to ~1e6: far past float16's range
    heads = cfg.h if per_head_masks() else 1  # a model that takes no head dimension gets masks shared by the heads
    keep = torch.rand(cfg.B, heads, cfg.Lq, cfg.Lk, generator=torch.Generator().manual_seed(seed)) < 0.5
    keep[..., 0, :] = False  # at least one fully masked row
    with torch.no_grad():
        block(x, memory, memory, keep.to(device))
    keep = keep.expand(cfg.B, cfg.h, cfg.Lq, cfg.Lk)
    config = {"dtype": str(dtype), "scale": scale}
    note(config)
    weights = kept_weights(block, (cfg.B, cfg.h, cfg.Lq, cfg.Lk), config=config)
    masked = weights.cpu()[~keep & keep.any(dim=-1, keepdim=True)]
    with explained(dtype, lambda: diagnose_check(
            block, (x, memory, memory, keep.to(device)), dtype=dtype, call=lambda m, *a: (m(*a), m.attention_scores)[1],
            check=lambda w: _mask_failure(w, keep))):
        assert torch.equal(masked, torch.zeros_like(masked)), "masked key has weight"
        assert torch.isfinite(weights).all(), f"non-finite attention weights in {dtype}"


def _mask_failure(weights: torch.Tensor, keep: torch.Tensor) -> str | None:
    """What ``test_attention_masks_in_half_precision_stay_finite`` asserts of ``weights``, as text (None: holds)."""
    masked = weights.cpu()[~keep & keep.any(dim=-1, keepdim=True)]
    if not torch.equal(masked, torch.zeros_like(masked)):
        return f"masked keys weigh up to {float(masked.abs().max()):.3g}"
    if not bool(torch.isfinite(weights).all()):
        return f"{int((~torch.isfinite(weights)).sum())} non-finite attention weights"
    return None


# --------------------------------------------------------------------------------------------------- CUDA only
@pytest.mark.clause("module.state")  # a self-comparison (CPU as reference): consistency, not numerics
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_transformer_cpu_and_cuda_agree(impl) -> None:
    """Same weights and inputs on CPU and CUDA (float32, TF32 off) agree within the float32 error-ratio rule."""
    cpu = randomize_parameters_(build_model(impl, SMALL_MODEL), 5).eval()
    cuda = randomize_parameters_(build_model(impl, SMALL_MODEL, device="cuda"), 5).eval()
    src, tgt, src_mask, tgt_mask = _model_inputs(5, "cpu")
    with torch.no_grad(), tf32_matmuls(False):
        out_cpu = cpu.project(cpu.decode(cpu.encode(src, src_mask), src_mask, tgt, tgt_mask))
        cu = [t.cuda() for t in (src, tgt, src_mask, tgt_mask)]
        out_cuda = cuda.project(cuda.decode(cuda.encode(cu[0], cu[2]), cu[2], cu[1], cu[3]))
    oracle = numpy_ref.transformer(src.numpy(), tgt.numpy(), src_mask.numpy(), tgt_mask.numpy(),
                                   extract_weights(cpu), **SMALL_ARCH)
    assert_error_ratio(out_cuda, out_cpu, oracle, component="Transformer on CUDA vs CPU", dtype=torch.float32,
                       label="the same model on CPU")


@pytest.mark.clause("module.state", "pe.buffer")
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_model_moved_to_cuda_carries_every_buffer(impl) -> None:
    model = build_model(impl, SMALL_MODEL).to("cuda")
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert tensors and all(t.device.type == "cuda" for t in tensors.values()), [
        n for n, t in tensors.items() if t.device.type != "cuda"]
    table = numpy_ref.positional_encoding_table(SMALL_MODEL.src_seq_len, SMALL_MODEL.d_model)
    np.testing.assert_allclose(model.src_pos.pe[0].double().cpu().numpy(), table, rtol=0, atol=6e-8)
