"""Helpers shared by the test modules: no ``tests/test_*.py`` imports from another, what two of them share lives here.

Parameters and strategies the torch comparisons draw with, array <-> tensor conversions, the float64 direct
comparison, builders of contract blocks and stacks from the implementation under test (the component registry's,
``reference.kit.components.build``), their inputs as tensors, and the runners of the control meta-tests.
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from hypothesis import note
from hypothesis import strategies as st
from torch import nn

from reference.kit import components, guard
from reference.oracles import masks
from reference.judge import tolerances
from reference.judge.compare import WrongOutput, assert_close, check_output, describe, describe_value, to_f64
from reference.spec.contract import DEFAULT_IMPL, ModelConfig, missing_extras
from reference.kit.weights import to_numpy
from tests.strategies import AttentionConfig, AttentionInputs, DropoutMode, ModelInputs

DTYPES = [pytest.param(torch.float64, id="float64"), pytest.param(torch.float32, id="float32")]
SEEDS = st.integers(0, 2**31 - 1)
LAYERS = st.integers(1, 3)

#: What a model-level property (causality, padding invariance, eval determinism) relies on besides the clause it
#: judges: the model must run end to end and give finite numbers, so a wrong component, a wrong composition or a
#: builder that ignores its arguments explains its failure (``@pytest.mark.own_evidence(given=...)``;
#: ``reference.kit.verdict``). The blocks are added per test: each judges its own block on its own evidence.
MODEL_GIVEN = ("api.attributes", "build.structure", "embed.scaled-lookup", "pe.formula", "pe.buffer", "pe.add",
               "ln.biased-variance", "ln.per-feature-affine", "ffn.formula", "mha.formula", "mha.static-attention",
               "residual.pre-norm", "residual.post-norm", "encoder.stack", "decoder.stack", "projection.logits",
               "transformer.compose")


# --------------------------------------------------------------------------------------------------- conversions
def as_tensor(a: np.ndarray | None, device: str, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """``a`` as a tensor on ``device`` (in ``dtype`` when given; a bool mask stays bool); None stays None."""
    return None if a is None else torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def f64(t: torch.Tensor | None) -> np.ndarray | None:
    """The exact float64 values of a (low-precision) tensor, for the NumPy oracle (perturbed inside
    ``reference.judge.conditioning.perturbation``, to measure the oracle's sensitivity)."""
    return None if t is None else to_numpy(t.double())


def model_tensors(case: ModelInputs, device: str
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(src [B, Ls], tgt [B, Lt] token ids, src_mask, tgt_mask) of a whole model."""
    return (as_tensor(case.src, device), as_tensor(case.tgt, device), as_tensor(case.src_mask, device),
            as_tensor(case.tgt_mask, device))


def keys_values(case: AttentionInputs, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, v) of an attention call: x itself for self-attention (one tensor, as the blocks call it); for
    cross-attention the memory as keys and the memory reversed along its length as values, so that k and v differ
    (a block that projects its values from k is caught)."""
    if case.memory is None:
        return x, x
    return (as_tensor(case.memory, x.device, x.dtype),
            as_tensor(case.memory[:, ::-1].copy(), x.device, x.dtype))


def rows(case: AttentionInputs, mask: np.ndarray | None, len_k: int) -> torch.Tensor:
    """Bool [B, Lq, 1]: the query rows with a visible key in every head under ``mask`` (torch's non-NaN rows)."""
    return masks.attended_rows(mask, batch=case.cfg.B, heads=case.cfg.h, len_q=case.cfg.Lq, len_k=len_k)


# --------------------------------------------------------------------------------------------------- comparisons
def assert_float64_close(actual: torch.Tensor, expected: torch.Tensor | np.ndarray, *, component: str,
                         config: dict, where: torch.Tensor | None = None, grad: bool = False,
                         sensitivity: Callable[[], torch.Tensor] | None = None) -> None:
    """float64 direct comparison: ``VALUE_TOL`` (``GRAD_TOL``) with atol raised to ``floor(float64, scale)``, i.e.
    9.1e-13 times the output's scale, when the scale exceeds 1. Elements outside ``where`` are not compared."""
    __tracebackhide__ = True
    e = to_f64(expected)
    a = to_f64(check_output(actual, e.shape, component=component, config=config))
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


class WeightsNotKept(WrongOutput, guard.KitClauseError):
    """After a forward, ``attention_scores`` holds no tensor: a FAIL of mha.static-attention ("the block keeps the
    weights in `attention_scores`") whatever test found it; that test's own clauses are not reached because of it
    (one bug, one root: a block that keeps no weights does not fail the formula, masking or numerics clauses)."""

    clause = "mha.static-attention"


def kept_weights(block: nn.Module, shape: tuple[int, ...] | None = None, *, component: str = "MultiHeadAttentionBlock",
                 config: dict | None = None) -> torch.Tensor:
    """The weights an attention block kept in ``attention_scores`` after its forward ([B, h, Lq, Lk]: ``shape``
    when given). :class:`WeightsNotKept` (a FAIL of mha.static-attention) when it kept none; a tensor of another
    shape fails the test's own clauses."""
    __tracebackhide__ = True
    weights = getattr(block, "attention_scores", None)
    if not isinstance(weights, torch.Tensor):
        wanted = f", a Tensor of shape {tuple(shape)}" if shape is not None else ""
        raise WeightsNotKept(f"{describe(component, config)}: after a forward `attention_scores` holds "
                          f"{describe_value(weights)}, not the attention weights (mha.static-attention: the block "
                          f"keeps the weights in `attention_scores`{wanted})")
    return check_output(weights, shape, component=f"{component}.attention_scores", config=config)


def attention_results(block: nn.Module, out: object, cfg: AttentionConfig, *, config: dict | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(output [B, Lq, d_model], kept weights [B, h, Lq, Lk]) of an attention block's forward on ``cfg``'s sizes,
    each checked a Tensor of its contract shape before a test computes with it (:func:`kept_weights`)."""
    __tracebackhide__ = True
    out = check_output(out, (cfg.B, cfg.Lq, cfg.d_model), component="MultiHeadAttentionBlock", config=config)
    return out, kept_weights(block, (cfg.B, cfg.h, cfg.Lq, cfg.Lk), config=config)


def noted(case: AttentionInputs | ModelInputs, **extra: Any) -> dict:
    """The example's configuration ``{**case.describe(), **extra}``, noted for Hypothesis' report."""
    config = {**case.describe(), **extra}
    note(config)
    return config


def skip_unless_extras(impl, *names: str) -> None:
    """Skip the calling test when the implementation lacks one of the optional extras ``names``."""
    __tracebackhide__ = True  # the skip is reported at the test, not here
    if missing := missing_extras(impl, *names):
        pytest.skip(f"implementation lacks {missing[0]}")


# --------------------------------------------------------------------------------------------------- modes, threads
def set_mode(modules: list[nn.Module], mode: DropoutMode) -> None:
    """Every module in train (``mode.train``) or eval mode."""
    for m in modules:
        m.train(mode.train)


def torch_twin(module: nn.Module, adapter: Callable[..., nn.Module], h: int, mode: DropoutMode) -> nn.Module:
    """Torch's module loaded with ``module``'s weights, ``adapter(module, h=h)``; both set to ``mode``."""
    twin = adapter(module, h=h)
    set_mode([module, twin], mode)
    return twin


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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count."""
    with contextlib.ExitStack() as restore:
        restore.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(n)
        yield


# --------------------------------------------------------------------------------------------------- builders
def _sizes(d_model: int, h: int = 1, d_ff: int = 4, p: float = 0.0, n: int = 1) -> ModelConfig:
    return ModelConfig(d_model=d_model, h=h, d_ff=d_ff, dropout=p, N=n)


def mha_block(impl, d_model: int, h: int, p: float, device: str, dtype: torch.dtype) -> nn.Module:
    """The registry's ``multi_head_attention`` (``reference.kit.components.build``)."""
    return components.build(impl, "multi_head_attention", _sizes(d_model, h, p=p), device=device, dtype=dtype)


def encoder_block(impl, d_model: int, h: int, d_ff: int, p: float, device: str, dtype: torch.dtype) -> nn.Module:
    """The registry's ``encoder_block``: its own attention and feed-forward blocks."""
    return components.build(impl, "encoder_block", _sizes(d_model, h, d_ff, p), device=device, dtype=dtype)


def decoder_block(impl, d_model: int, h: int, d_ff: int, p: float, device: str, dtype: torch.dtype) -> nn.Module:
    """The registry's ``decoder_block``: its own self- and cross-attention and feed-forward blocks."""
    return components.build(impl, "decoder_block", _sizes(d_model, h, d_ff, p), device=device, dtype=dtype)


def encoder(impl, n: int, d_model: int, h: int, d_ff: int, p: float, device: str, dtype: torch.dtype) -> nn.Module:
    """The registry's ``encoder`` of n blocks."""
    return components.build(impl, "encoder", _sizes(d_model, h, d_ff, p, n), device=device, dtype=dtype)


def decoder(impl, n: int, d_model: int, h: int, d_ff: int, p: float, device: str, dtype: torch.dtype) -> nn.Module:
    """The registry's ``decoder`` of n blocks."""
    return components.build(impl, "decoder", _sizes(d_model, h, d_ff, p, n), device=device, dtype=dtype)


def encode_decode_project(model: nn.Module, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None,
                          tgt_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(memory = encode(src), decoded = decode(memory, ..., tgt), logits = project(decoded)) of a whole model."""
    memory = model.encode(src, src_mask)
    decoded = model.decode(memory, src_mask, tgt, tgt_mask)
    return memory, decoded, model.project(decoded)


# --------------------------------------------------------------------------------------------------- control meta-tests
def skip_unless_default_impl(impl_name: str, who: str) -> None:
    """The control meta-tests judge the suite, not ``--impl``: skip them for another implementation."""
    if impl_name != DEFAULT_IMPL:
        pytest.skip(f"the {who} meta-tests judge the suite, not --impl {impl_name}")


def expected_kills() -> dict:
    """The kill matrix's record (``tests/negative_controls/expected_kills.json``); fails the test when missing."""
    from tests.negative_controls import EXPECTED_KILLS
    from tests.negative_controls.kill_matrix import COMMAND, ROOT

    if not EXPECTED_KILLS.exists():
        pytest.fail(f"{EXPECTED_KILLS.relative_to(ROOT)} is missing: run `{COMMAND}`")
    return json.loads(EXPECTED_KILLS.read_text())


def run_controls(entries: list[dict]) -> list[dict]:
    """One result per entry (an ``--impl`` and pytest arguments), from ``tests.negative_controls._run`` in a
    subprocess, with the kill matrix's environment."""
    from tests.negative_controls.kill_matrix import ROOT, child_env

    with tempfile.TemporaryDirectory(prefix="negative-controls-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps(entries))
        proc = subprocess.run([sys.executable, "-m", "tests.negative_controls._run", str(spec), str(out)],
                              cwd=ROOT, env=child_env(), capture_output=True, text=True)
        assert out.exists(), f"the control runner crashed:\n{(proc.stdout + proc.stderr)[-4000:]}"
        results = json.loads(out.read_text())
    assert len(results) == len(entries), f"the runner stopped early:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return results
