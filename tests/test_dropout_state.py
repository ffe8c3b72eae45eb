"""Dropout, determinism and state: eval is deterministic and equals p = 0; train mode drops a binomial fraction p
and scales survivors by 1/(1-p) at every dropout site; same seed, same outputs; ``state_dict`` round trips bit for
bit; dtype and device moves carry every tensor and keep the outputs."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Callable

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from torch import nn

from reference.judge import tolerances
from reference.kit import guard
from reference.judge.compare import assert_close, check_output
from reference.spec import variants
from reference.spec.contract import build_model, construct, randomize_parameters_
from tests.strategies import ModelBatch, dropout_rates, model_batches
from tests.support import MODEL_GIVEN, kept_weights

F32 = torch.float32

#: A model-level property relies on the model running end to end: a wrong component or wiring (one that raises on
#: unequal lengths, or yields NaN) explains its failure (``own_evidence(given=...)``; reference.kit.verdict).
MODEL_WIRING = (*MODEL_GIVEN, "encoder.block", "decoder.block")


def _masks(batch: ModelBatch, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(src key-padding Bool[B, 1, 1, Ls], tgt causal Bool[1, Lt, Lt])."""
    Ls, Lt = batch.src.shape[1], batch.tgt.shape[1]
    lengths = torch.as_tensor(batch.src_lengths, device=device)
    src_mask = (torch.arange(Ls, device=device)[None, :] < lengths[:, None])[:, None, None, :]
    return src_mask, torch.tril(torch.ones(1, Lt, Lt, dtype=torch.bool, device=device))


def _logits(model: nn.Module, batch: ModelBatch, device: str) -> torch.Tensor:
    src, tgt = torch.as_tensor(batch.src, device=device), torch.as_tensor(batch.tgt, device=device)
    src_mask, tgt_mask = _masks(batch, device)
    return model.project(model.decode(model.encode(src, src_mask), src_mask, tgt, tgt_mask))


# ------------------------------------------------------------------------------------------------ eval mode
@pytest.mark.own_evidence(given=MODEL_WIRING)
@pytest.mark.blackbox
@pytest.mark.clause("dropout.semantics")
@given(batch=model_batches(), p=dropout_rates(), seed=st.integers(0, 2**31 - 1))
def test_transformer_eval_is_deterministic_and_equals_p0(impl, device: str, batch: ModelBatch, p: float,
                                                         seed: int) -> None:
    """In eval mode a model built with dropout p gives the same logits twice, and exactly those of the same weights
    in a model built with p = 0 in eval (the same code path: only p differs, and eval ignores it). In train mode with
    p = 0 nothing is dropped, so the logits are eval's up to float32 rounding: a correct model may take another
    kernel in eval (``F.scaled_dot_product_attention``, torch's own fast paths), which rounds differently, so that
    comparison is the equivalence tests' float32 value tolerance, not bit equality."""
    note({**batch.describe(), "p": p})
    model = randomize_parameters_(build_model(impl, replace(batch.cfg, dropout=p), device=device), seed).eval()
    plain = build_model(impl, replace(batch.cfg, dropout=0.0), device=device)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        first, second = _logits(model, batch, device), _logits(model, batch, device)
        plain_eval = _logits(plain.eval(), batch, device)
        plain_train = _logits(plain.train(), batch, device)
    # NaN where NaN counts as the same: a formula that yields NaN (an unbiased std at d_model=1) is its own clause's
    # finding, not a nondeterministic eval mode
    assert guard.same(first, second), "eval mode is not deterministic"
    assert guard.same(first, plain_eval), f"eval with p={p} differs from the same weights with p=0"
    assert_close(plain_train, first, component="Transformer (train mode, p=0, vs eval)",
                 config={**batch.describe(), "p": p}, expected_from_impl=True)


# ------------------------------------------------------------------------------------------------ train mode
def _positional_site(impl, p: float, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """PositionalEncoding: dropout(x + pe) with x = 2, so every pre-dropout value lies in [1, 3]."""
    module = construct(impl.PositionalEncoding, 64, 64, p, device=device, dtype=dtype)
    x = torch.full((4, 64, 64), 2.0, device=device, dtype=dtype)
    return module.train()(x), module.eval()(x)


def _attention_site(impl, p: float, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """MultiHeadAttentionBlock: the weights kept in ``attention_scores`` (unmasked, all > 0 before dropout)."""
    module = construct(impl.MultiHeadAttentionBlock, 32, 4, p, device=device, dtype=dtype)
    x = torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    module.train()(x, x, x, None)
    dropped = kept_weights(module, (4, 4, 32, 32), config={"p": p, "mode": "train"})
    module.eval()(x, x, x, None)
    return dropped, kept_weights(module, (4, 4, 32, 32), config={"p": p, "mode": "eval"})


def _feed_forward_site(impl, p: float, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """FeedForwardBlock with linear_1 = 0 x + 1 (relu passes ones) and linear_2 = identity: the output is the
    dropout of ones, wherever in the block the dropout sits."""
    module = construct(impl.FeedForwardBlock, 64, 64, p, device=device, dtype=dtype)
    with torch.no_grad():
        module.linear_1.weight.zero_()
        module.linear_1.bias.fill_(1.0)
        module.linear_2.weight.copy_(torch.eye(64))
        module.linear_2.bias.zero_()
    x = torch.randn(4, 64, 64, generator=torch.Generator().manual_seed(2)).to(device=device, dtype=dtype)
    return module.train()(x), module.eval()(x)


def _residual_site(impl, p: float, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """ResidualConnection(x = 0, sublayer = ones): ``0 + dropout(ones)``."""
    module = construct(impl.ResidualConnection, 64, p, device=device, dtype=dtype)
    x = torch.zeros(4, 64, 64, device=device, dtype=dtype)

    def sublayer(y: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(y)

    return module.train()(x, sublayer), module.eval()(x, sublayer)


def _check_post_norm_residual_fraction(impl, p: float, device: str, dtype: torch.dtype) -> None:
    """Under ``--variant post-norm`` the residual's dropout sits before its norm: ``norm(0 + dropout(ones))``. Each
    row then holds two levels, the dropped elements at the lower one (a LayerNorm keeps the order), so the dropped
    fraction is observable; the survivors' 1/(1-p) scaling is not (a LayerNorm's output does not change when its
    input row is scaled), and is judged at the three other sites. A row of one level (all dropped or none, chance
    p^64 or (1-p)^64) says nothing and is left out."""
    module = construct(impl.ResidualConnection, 64, p, device=device, dtype=dtype)
    with torch.no_grad():
        out = module.train()(torch.zeros(4, 64, 64, device=device, dtype=dtype), torch.ones_like).float()
    check_output(out, (4, 64, 64), component="residual (post-norm)", config={"mode": "train", "p": p})
    low, high = out.amin(-1, keepdim=True), out.amax(-1, keepdim=True)
    mixed = (high - low > 0).expand_as(out)
    n = int(mixed.sum())
    fraction = float(((out < (low + high) / 2) & mixed).sum()) / max(n, 1)
    bound = tolerances.DROPOUT_SIGMAS * math.sqrt(p * (1 - p) / max(n, 1))
    assert n and abs(fraction - p) <= bound, (
        f"residual (post-norm): {fraction:.4f} of {n} elements at their row's lower level (dropped), expected "
        f"p={p:.4f} +- {bound:.4f} ({tolerances.DROPOUT_SIGMAS} sigma)")


SITES: dict[str, Callable] = {"positional_encoding": _positional_site, "attention_weights": _attention_site,
                              "feed_forward": _feed_forward_site, "residual": _residual_site}


#: What each site's reading of the dropout relies on besides the constructor and the attributes it sets: the
#: attention weights are the softmax probabilities (static attention); the residual's dropout sits on the sublayer's
#: branch, ``x + dropout(sublayer(norm(x)))`` (or before the norm, post-norm).
SITE_GIVEN: dict[str, tuple[str, ...]] = {"attention_weights": ("mha.static-attention",),
                                          "residual": ("residual.pre-norm", "residual.post-norm")}


@pytest.mark.own_evidence("dropout.semantics", given=("api.attributes",))
@pytest.mark.clause("dropout.semantics", "numerics.16bit-semantics")
@pytest.mark.parametrize("dtype", [F32, torch.float16, torch.bfloat16], ids=["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("site", [pytest.param(s, marks=pytest.mark.own_evidence(
    "dropout.semantics", given=SITE_GIVEN.get(s, ()))) for s in SITES])
@given(p=dropout_rates(), seed=st.integers(0, 2**31 - 1))
def test_dropout_zeroes_a_binomial_fraction_and_scales_survivors(impl, device: str, site: str, dtype: torch.dtype,
                                                                 p: float, seed: int) -> None:
    """Train mode at each dropout site: the zero fraction is p within ``DROPOUT_SIGMAS`` binomial standard
    deviations, and every survivor is its eval-mode value times 1/(1-p). Pre-dropout values are all nonzero, so a
    zero can only come from dropout. In float16/bfloat16 too: a module that computes in float32 and casts back must
    still drop (the survivors' scaling is then judged at the 16-bit dtype's tolerance)."""
    note(f"site={site}, dtype={dtype}, p={p}, seed={seed}")
    torch.manual_seed(seed)
    if site == "residual" and variants.variant() == variants.POST_NORM:
        _check_post_norm_residual_fraction(impl, p, device, dtype)
        return
    with torch.no_grad():
        dropped, clean = SITES[site](impl, p, device, dtype)
    check_output(clean, component=site, config={"mode": "eval"})
    check_output(dropped, clean.shape, component=site, config={"mode": "train"})
    assert bool((clean != 0).all()), f"{site}: eval-mode values contain zeros; the check needs them nonzero"
    kept = dropped != 0
    n = kept.numel()
    fraction = 1.0 - float(kept.sum()) / n
    bound = tolerances.DROPOUT_SIGMAS * math.sqrt(p * (1 - p) / n)
    assert abs(fraction - p) <= bound, (
        f"{site}: {fraction:.4f} of {n} elements dropped, expected p={p:.4f} +- {bound:.4f} "
        f"({tolerances.DROPOUT_SIGMAS} sigma)")
    assert_close(dropped[kept], clean[kept] / (1 - p), component=f"{site} survivors (x / (1 - p))",
                 config={"p": p, "dtype": str(dtype)}, dtype=dtype)


# ------------------------------------------------------------------------------------------------ seeds, state
@pytest.mark.own_evidence(given=MODEL_WIRING)
@pytest.mark.blackbox
@pytest.mark.clause("dropout.semantics")
@given(batch=model_batches(max_N=1), p=dropout_rates(), seed=st.integers(0, 2**31 - 1))
def test_transformer_same_seed_same_outputs(impl, device: str, batch: ModelBatch, p: float, seed: int) -> None:
    """``torch.manual_seed(s)``, build, forward in train mode (dropout p): twice, bit for bit the same."""
    note({**batch.describe(), "p": p, "seed": seed})
    runs = []
    for _ in range(2):
        torch.manual_seed(seed)
        model = build_model(impl, replace(batch.cfg, dropout=p), device=device).train()
        with torch.no_grad():
            runs.append((model.state_dict(), _logits(model, batch, device)))
    (state_a, out_a), (state_b, out_b) = runs
    for name, value in state_a.items():
        assert guard.same(value, state_b[name]), f"{name} differs between two builds from seed {seed}"
    assert guard.same(out_a, out_b), f"train-mode outputs differ between two runs from seed {seed}"


@pytest.mark.blackbox
@pytest.mark.clause("module.state")
@given(batch=model_batches(), seed=st.integers(0, 2**31 - 1))
def test_transformer_state_dict_round_trip_is_bit_exact(impl, device: str, batch: ModelBatch, seed: int) -> None:
    """A ``state_dict`` loaded (strict) into a freshly built model, initialised from another seed, reproduces the
    logits bit for bit."""
    note({**batch.describe(), "seed": seed})
    torch.manual_seed(seed)
    source = randomize_parameters_(build_model(impl, batch.cfg, device=device), seed).eval()
    torch.manual_seed(seed + 1)
    fresh = build_model(impl, batch.cfg, device=device).eval()
    fresh.load_state_dict(source.state_dict())
    with torch.no_grad():
        expected, got = _logits(source, batch, device), _logits(fresh, batch, device)
    assert guard.same(got, expected), (
        f"state_dict round trip changes the logits: max diff {float((got - expected).abs().max()):.3e}")


@pytest.mark.blackbox
@pytest.mark.clause("module.state")
@given(batch=model_batches(max_N=1), seed=st.integers(0, 2**31 - 1))
def test_transformer_move_to_its_own_device_and_dtype_changes_nothing(impl, device: str, batch: ModelBatch,
                                                                      seed: int) -> None:
    """``.to(its own device, its own dtype)`` and ``.float()`` on a float32 model are no-ops, as for any
    ``nn.Module``: every tensor of a loaded ``state_dict`` (random values everywhere, the ``pe`` tables too) is
    kept bit for bit."""
    note({**batch.describe(), "seed": seed})
    model = build_model(impl, batch.cfg, device=device, dtype=F32)
    gen = torch.Generator().manual_seed(seed)
    loaded = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device) if v.is_floating_point() else v
              for k, v in model.state_dict().items()}
    model.load_state_dict(loaded)
    # what the load left (a model that shares a tensor between two keys keeps one of the two values: the sharing is
    # build.structure's finding, test_contract.py), which the move must keep
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(device=device, dtype=F32)
    model.float()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert not changed, f"a no-op move changed {len(changed)} tensors: {changed[:5]}"


# ------------------------------------------------------------------------------------------------ device, dtype
def _held_tensors(model: nn.Module):
    """Every tensor the modules hold: parameters, buffers and plain tensor attributes, with dotted names."""
    for prefix, module in model.named_modules():
        for name, value in vars(module).items():
            if isinstance(value, torch.Tensor):
                yield f"{prefix}.{name}".lstrip("."), value
        for name, value in list(module._parameters.items()) + list(module._buffers.items()):
            if value is not None:
                yield f"{prefix}.{name}".lstrip("."), value


@pytest.mark.clause("module.state")
@given(batch=model_batches(), dtype=st.sampled_from((F32, torch.float64)), seed=st.integers(0, 2**31 - 1))
def test_transformer_moves_every_tensor_and_agrees_across_devices(impl, device: str, batch: ModelBatch,
                                                                  dtype: torch.dtype, seed: int) -> None:
    """A float32 CPU model moved with ``.to(device, dtype)``: every tensor it holds lands on the device in that
    dtype, and its logits match the CPU model converted to the same dtype (dtype tolerance)."""
    note({**batch.describe(), "dtype": dtype, "device": device})
    model = randomize_parameters_(build_model(impl, batch.cfg, device="cpu", dtype=F32), seed).eval()
    on_cpu = copy.deepcopy(model).to(dtype=dtype)
    moved = model.to(device=device, dtype=dtype)
    with torch.no_grad():
        expected, got = _logits(on_cpu, batch, "cpu"), _logits(moved, batch, device)
    for name, value in _held_tensors(moved):
        assert value.device.type == device, f"{name} stayed on {value.device} after .to({device!r})"
        if value.is_floating_point():
            assert value.dtype == dtype, f"{name} is {value.dtype} after .to({dtype})"
    assert_close(got.cpu(), expected, component=f"logits on {device} vs cpu", config=batch.describe(), dtype=dtype)
