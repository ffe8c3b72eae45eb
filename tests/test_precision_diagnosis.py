"""The 16-bit differential diagnosis (``reference.judge.precision``) on tiny hand-made modules: a LayerNorm computing in
float16 (the formula right, the arithmetic 16-bit), one upcasting to float32 (correct), one with a wrong formula;
an attention mask whose float16 scores overflow, and one that is wrong in any dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference.oracles import numpy_ref
from reference.judge.compare import NonFiniteReference, judge
from reference.judge.precision import diagnose, diagnose_check, explained

pytestmark = pytest.mark.clause("kit")

EPS = 1e-6
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class InDtypeLayerNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps)`` in the input's dtype: 16-bit arithmetic, no float32 accumulation."""

    def __init__(self, features: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(features, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(features, dtype=dtype))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        return centred / torch.sqrt((centred * centred).mean(-1, keepdim=True) + EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(x) * self.alpha + self.bias


class UpcastLayerNorm(InDtypeLayerNorm):
    """The same formula accumulated in float32 and cast back, as ``nn.LayerNorm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.normalise(x.float()) * self.alpha.float() + self.bias.float()).to(x.dtype)


class BlogLayerNorm(UpcastLayerNorm):
    """A wrong formula in any dtype: the unbiased std plus eps, ``(x - mean) / (std + eps)``."""

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + EPS)


def _layer_norm_case(cls: type, dtype: torch.dtype, bound: float, seed: int = 0):
    """(module, x, oracle, torch's output, the verdict of the 16-bit run) on rows uniform in [-bound, bound]."""
    x = torch.from_numpy(np.random.default_rng(seed).uniform(-bound, bound, (4, 16))).to(dtype)
    module = cls(16, dtype)
    oracle = numpy_ref.layer_norm(x.double().numpy(), np.ones(16), np.zeros(16), EPS)
    with torch.no_grad():
        out, torch_out = module(x), F.layer_norm(x, (16,), eps=EPS)
    return module, x, oracle, torch_out, judge(out, oracle, dtype=dtype, torch_out=torch_out, rule="ratio")


def _diagnose_layer_norm(module, x, oracle, torch_out, dtype) -> str:
    return diagnose(module, (x,), dtype=dtype, oracle=oracle, torch_out=torch_out,
                    torch_call=lambda m, a: F.layer_norm(a, (16,), m.alpha, m.bias, EPS))


@pytest.mark.parametrize("bound, finding", [(1e3, "float16 overflows at `mul`"), (1e-3, "float16 underflows at")])
def test_layer_norm_in_float16_is_diagnosed_as_16bit_arithmetic(bound: float, finding: str) -> None:
    module, x, oracle, torch_out, verdict = _layer_norm_case(InDtypeLayerNorm, torch.float16, bound)
    assert not verdict.ok, "the case must fail in float16 for the diagnosis to mean anything"
    text = _diagnose_layer_norm(module, x, oracle, torch_out, torch.float16)
    assert text.startswith("16-bit diagnosis: computes in float16 (float16 arithmetic in "), text
    assert "with float32 accumulation" in text and "within the tolerance, so the formula is right" in text, text
    assert finding in text, text
    assert module.alpha.dtype == torch.float16, "the diagnosis re-runs a copy, never the module itself"


def test_upcasting_layer_norm_passes_and_shows_no_16bit_arithmetic() -> None:
    module, x, oracle, torch_out, verdict = _layer_norm_case(UpcastLayerNorm, torch.float16, 1e3)
    assert verdict.ok, verdict.message()
    text = _diagnose_layer_norm(module, x, oracle, torch_out, torch.float16)
    assert "no float16 arithmetic beyond casts and linear layers" in text and "overflows" not in text, text


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_wrong_formula_stays_wrong_in_float32(dtype_name: str) -> None:
    dtype = DTYPES[dtype_name]
    module, x, oracle, torch_out, verdict = _layer_norm_case(BlogLayerNorm, dtype, 1.0)
    assert not verdict.ok
    text = _diagnose_layer_norm(module, x, oracle, torch_out, dtype)
    assert text.startswith("16-bit diagnosis: a wrong formula, not a precision problem: stays wrong in float32 "
                           "(error "), text
    assert "x torch's float32 error" in text and f"x torch's {dtype_name} error" in text, text


def _attention_weights(scores_in_float32: bool, inverted: bool = False):
    """The static attention's weights with the mask filled by ``finfo(scores.dtype).min`` (q, k: [B, L, d])."""
    def weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a, b = (q.float(), k.float()) if scores_in_float32 else (q, k)
        scores = a @ b.transpose(-2, -1)
        keep = ~mask if inverted else mask
        return scores.masked_fill(~keep, torch.finfo(scores.dtype).min).softmax(-1).to(q.dtype)
    return weights


def _mask_failure(w: torch.Tensor, mask: torch.Tensor) -> str | None:
    if not bool(torch.isfinite(w).all()):
        return "non-finite weights"
    return "masked keys have weight" if bool((w[~mask.expand_as(w)] != 0).any()) else None


def test_overflowing_scores_are_diagnosed_against_a_masking_bug() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 5, 8, generator=gen) * 300).half(), (torch.randn(2, 5, 8, generator=gen) * 300).half()
    mask = torch.rand(2, 5, 5, generator=gen) < 0.6
    mask[..., 0] = True
    for upcast in (False, True):
        w = _attention_weights(upcast)(q, k, mask)
        assert (_mask_failure(w, mask) is None) == upcast  # 16-bit scores reach ~1e5: inf - inf = NaN
    text = diagnose_check(_attention_weights(False), (q, k, mask), dtype=torch.float16,
                          check=lambda w: _mask_failure(w, mask))
    assert text.startswith("16-bit diagnosis: computes in float16"), text
    assert "the property holds" in text and "float16 overflows at `matmul`" in text, text
    assert "past float16's largest 65504" in text, text
    wrong = diagnose_check(_attention_weights(True, inverted=True), (q, k, mask), dtype=torch.float16,
                           check=lambda w: _mask_failure(w, mask))
    assert wrong == ("16-bit diagnosis: a wrong formula, not a precision problem: stays wrong in float32 "
                     "(masked keys have weight)"), wrong


def test_explained_appends_only_to_16bit_failures() -> None:
    with pytest.raises(AssertionError, match=r"(?s)too far\n  WHY$"):
        with explained(torch.float16, lambda: "WHY"):
            raise AssertionError("too far")
    for dtype, exc in ((torch.float32, AssertionError("too far")), (torch.bfloat16, NonFiniteReference("too far"))):
        with pytest.raises(type(exc)) as info:
            with explained(dtype, lambda: "WHY"):
                raise exc
        assert str(info.value) == "too far"
    with pytest.raises(AssertionError, match="16-bit diagnosis unavailable: ZeroDivisionError"):
        with explained(torch.float16, lambda: str(1 / 0)):
            raise AssertionError("too far")


def test_a_rerun_that_raises_is_reported_not_raised() -> None:
    def fails_in_float32(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            raise RuntimeError("no float32 here")
        return x
    x = torch.ones(3, dtype=torch.float16)
    text = diagnose(fails_in_float32, (x,), dtype=torch.float16, oracle=np.ones(3), torch_out=x)
    assert text == "16-bit diagnosis unavailable: the float32 re-run raised RuntimeError: no float32 here"


def test_a_failing_16bit_report_row_carries_the_diagnosis() -> None:
    from reference.kit.load import load_impl
    from reference.report.cases import CONFIGS
    from reference.report.sweep import run_one

    blog = load_impl("tests.negative_controls.layernorm_blog")
    failed = run_one(blog, "layer_norm", CONFIGS[0], "cpu", torch.float16, 0)
    assert not failed.passed
    assert "; 16-bit diagnosis: a wrong formula, not a precision problem: stays wrong in float32" in \
        failed.outcome.detail, failed.outcome.detail
    passed = run_one(load_impl("scratch_transformer"), "layer_norm", CONFIGS[0], "cpu", torch.float16, 0)
    assert passed.passed and "diagnosis" not in passed.outcome.detail


def test_an_additive_fill_that_overflows_to_nan_is_named_a_harmless_one_is_not() -> None:
    def additive(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = q @ k.transpose(-2, -1)
        return (scores + torch.zeros_like(scores).masked_fill(~mask, torch.finfo(scores.dtype).min)).softmax(-1)

    q, k = torch.full((1, 3, 4), 8.0).half(), torch.full((1, 3, 4), -8.0).half()  # every score -256
    fully_masked = torch.tensor([[False] * 3, [True] * 3, [True, False, True]])
    text = diagnose_check(additive, (q, k, fully_masked), dtype=torch.float16,
                          check=lambda w: None if bool(torch.isfinite(w).all()) else "non-finite weights")
    assert "float16 overflows at `add`" in text and "NaN follows at `softmax`" in text, text
    partly = fully_masked.clone()
    partly[0, 0] = True  # every row sees a key: the -inf of the masked keys is harmless
    text = diagnose_check(additive, (q, k, partly), dtype=torch.float16, check=lambda w: None)
    assert "no overflow or underflow" in text, text
