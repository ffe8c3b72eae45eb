"""The sinusoidal positional encoding: the paper's formula, its layout, the relative-position rotation, the buffer.

``pe[pos, 2i] = sin(pos / 10000^(2i/d))``, ``pe[pos, 2i+1] = cos(pos / 10000^(2i/d))`` (section 3.5 of the
paper), read through the contract's buffer ``pe`` [1, seq_len, d]. An entry at position ``pos`` may be off by the
dtype's value tolerance plus ``PE_ANGLE_ULPS * eps(dtype) * pos`` (the rounding of sin's argument).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, note
from hypothesis import strategies as st

from reference.judge import tolerances
from reference.judge.compare import error_stats, to_f64
from reference.spec.contract import ModelConfig, build_model, construct
from tests.strategies import pe_configs

DTYPES = (torch.float32, torch.float64)


def paper_sinusoid(seq_len: int, d_model: int) -> np.ndarray:
    """float64 [seq_len, d]: the paper's table; odd ``d_model`` ends with a sine column."""
    pos = np.arange(seq_len, dtype=np.float64)[:, None]  # (L, 1)
    angle = pos / np.power(10000.0, np.arange(0, d_model, 2, dtype=np.float64) / d_model)  # (L, ceil(d/2))
    table = np.empty((seq_len, d_model))
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return table


def assert_table_close(actual: torch.Tensor, expected: np.ndarray, *, dtype: torch.dtype, component: str,
                       config: dict, angle_dtype: torch.dtype | None = None) -> None:
    """Per entry: ``|actual - expected| <= atol + rtol |expected| + PE_ANGLE_ULPS * eps(angle_dtype) * pos``.

    actual, expected: [L, d]; ``dtype`` picks (rtol, atol); ``angle_dtype`` (default ``dtype``) the argument's eps.
    """
    __tracebackhide__ = True
    a, e = to_f64(actual), torch.as_tensor(expected)
    assert a.shape == e.shape, f"{component}: table shape {tuple(a.shape)} != {tuple(e.shape)}"
    rtol, atol = tolerances.value_tol(dtype)
    pos = torch.arange(e.shape[0], dtype=torch.float64)[:, None]
    allowed = atol + rtol * e.abs() + tolerances.PE_ANGLE_ULPS * tolerances.eps(angle_dtype or dtype) * pos
    bad = ~((a - e).abs() <= allowed)  # NaN counts as bad
    if bad.any():
        stats = error_stats(a, e, where=bad)
        raise AssertionError(
            f"{component} {config}: {int(bad.sum())} / {bad.numel()} entries off the paper's formula\n"
            f"  {stats.line()}\n  allowed there: {float(allowed[stats.index]):.3e} "
            f"(rtol={rtol:.1e}, atol={atol:.1e}, + {tolerances.PE_ANGLE_ULPS} eps * pos)")


def _table(impl, d_model: int, seq_len: int, dtype: torch.dtype, device: str = "cpu") -> torch.Tensor:
    module = construct(impl.PositionalEncoding, d_model, seq_len, 0.0, device=device, dtype=dtype)
    assert tuple(module.pe.shape) == (1, seq_len, d_model), f"pe has shape {tuple(module.pe.shape)}"
    return module.pe[0]


@pytest.mark.clause("pe.formula")
@given(cfg=pe_configs(max_d_model=520), dtype=st.sampled_from(DTYPES))
@example(cfg=(7, 5), dtype=torch.float64)  # an odd width, whatever the draws: its last column is a sine
def test_positional_encoding_matches_paper_formula(impl, cfg: tuple[int, int], dtype: torch.dtype) -> None:
    """Every entry, positions past 2048, even and odd d_model, float32 and float64 tables."""
    d_model, seq_len = cfg
    note(f"d_model={d_model}, seq_len={seq_len}, dtype={dtype}")
    pe = _table(impl, d_model, seq_len, dtype)
    assert pe.dtype == dtype
    assert_table_close(pe, paper_sinusoid(seq_len, d_model), dtype=dtype, component="PositionalEncoding.pe",
                       config={"d_model": d_model, "seq_len": seq_len, "dtype": dtype})


@pytest.mark.clause("pe.formula", "pe.buffer")
@given(cfg=pe_configs(lengths=st.integers(2, 300)), dtype=st.sampled_from(DTYPES))
def test_positional_encoding_layout(impl, cfg: tuple[int, int], dtype: torch.dtype) -> None:
    """Row 0 is [0, 1, 0, 1, ...]; |pe| <= 1; sin^2 + cos^2 = 1 per column pair; frequencies 10000^(-2i/d).

    The frequency of pair i is read off row 1 as ``atan2(pe[1, 2i], pe[1, 2i+1])`` (it lies in (0, 1]), so an
    interleaving with cosines first, or any other progression, shows up here on its own.
    """
    d_model, seq_len = cfg
    note(f"d_model={d_model}, seq_len={seq_len}, dtype={dtype}")
    pe = to_f64(_table(impl, d_model, seq_len, dtype))
    rtol, atol = tolerances.value_tol(dtype)
    row0 = torch.tensor([float(j % 2) for j in range(d_model)], dtype=torch.float64)
    assert torch.equal(pe[0], row0), f"row 0 is {pe[0][:8].tolist()}..., expected [0, 1, 0, 1, ...]"
    assert bool((pe.abs() <= 1).all()), f"entries outside [-1, 1]: max |pe| = {float(pe.abs().max())}"
    pairs = d_model // 2
    if pairs == 0:
        return
    sin, cos = pe[:, 0:2 * pairs:2], pe[:, 1:2 * pairs:2]
    torch.testing.assert_close(sin ** 2 + cos ** 2, torch.ones_like(sin), rtol=rtol, atol=atol,
                               msg=lambda m: f"pe[pos, 2i]^2 + pe[pos, 2i+1]^2 != 1\n{m}")
    freq = torch.atan2(sin[1], cos[1])  # (pairs,)
    expected = torch.pow(10000.0, -torch.arange(0, 2 * pairs, 2, dtype=torch.float64) / d_model)
    assert float(freq[0]) == pytest.approx(1.0, rel=rtol, abs=atol), f"first frequency {float(freq[0])} != 1"
    torch.testing.assert_close(freq, expected, rtol=rtol, atol=atol,
                               msg=lambda m: f"frequencies are not 10000^(-2i/d), 1 down towards 1/10000\n{m}")


@pytest.mark.clause("pe.formula")
@given(cfg=pe_configs(max_d_model=64, lengths=st.integers(3, 600)), offset=st.integers(1, 599),
       dtype=st.sampled_from(DTYPES))
def test_positional_encoding_offset_is_a_fixed_rotation(impl, cfg: tuple[int, int], offset: int,
                                                        dtype: torch.dtype) -> None:
    """``PE(pos + k) = M_k PE(pos)`` for every pos, with ``M_k`` block-diagonal 2x2 rotations by ``k * w_i``.

    ``w_i`` is the angle each column pair turns through from row 0 to row 1 (read off the table, not the formula),
    so the property holds or fails on the table's own terms: each pair must turn at one fixed rate.
    """
    d_model, seq_len = cfg
    k = min(offset, seq_len - 1)
    note(f"d_model={d_model}, seq_len={seq_len}, k={k}, dtype={dtype}")
    pe = to_f64(_table(impl, d_model, seq_len, dtype))
    pairs = d_model // 2
    if pairs == 0:
        return
    sin, cos = pe[:, 0:2 * pairs:2], pe[:, 1:2 * pairs:2]  # (L, pairs) each
    step = torch.atan2(sin[1], cos[1]) - torch.atan2(sin[0], cos[0])  # (pairs,) angle per position
    c, s = torch.cos(k * step), torch.sin(k * step)
    rotated = torch.empty(seq_len - k, 2 * pairs, dtype=torch.float64)
    rotated[:, 0::2] = sin[:-k] * c + cos[:-k] * s  # sin(a + kw) = sin a cos kw + cos a sin kw
    rotated[:, 1::2] = cos[:-k] * c - sin[:-k] * s  # cos(a + kw) = cos a cos kw - sin a sin kw
    shifted = pe[k:, : 2 * pairs]
    rtol, atol = tolerances.value_tol(dtype)
    pos = torch.arange(k, seq_len, dtype=torch.float64)[:, None]
    allowed = atol + rtol * shifted.abs() + tolerances.PE_ANGLE_ULPS * tolerances.eps(dtype) * pos
    err = (rotated - shifted).abs()
    assert bool((err <= allowed).all()), (
        f"PE(pos + {k}) is not a fixed rotation of PE(pos): {int((err > allowed).sum())} entries off, "
        f"max error {float(err.max()):.3e} (allowed {float(allowed.min()):.3e}..{float(allowed.max()):.3e})")


@pytest.mark.clause("pe.buffer", "pe.add")
def test_positional_encoding_pe_is_a_persistent_buffer(impl) -> None:
    """``pe`` is in ``state_dict`` and ``named_buffers``, not a parameter, and takes no gradient."""
    module = construct(impl.PositionalEncoding, 6, 5, 0.0)
    assert "pe" in module.state_dict(), "pe is missing from state_dict (registered non-persistent?)"
    assert "pe" in dict(module.named_buffers()), "pe is not a registered buffer"
    assert "pe" not in dict(module.named_parameters()), "pe is a parameter; it must be a fixed buffer"
    assert not module.pe.requires_grad
    x = torch.randn(2, 5, 6, requires_grad=True)
    module(x).sum().backward()
    assert module.pe.grad is None and x.grad is not None
    model = build_model(impl, ModelConfig(d_model=8, N=1, h=2, d_ff=8))
    state = model.state_dict()
    assert "src_pos.pe" in state and "tgt_pos.pe" in state, "the model's state_dict lacks the positional tables"
    assert not any(name.endswith("pe") for name, _ in model.named_parameters())


@pytest.mark.clause("pe.buffer", "pe.formula")
@given(cfg=pe_configs(max_d_model=64, lengths=st.integers(1, 2100)))
def test_positional_encoding_follows_to_double_half(impl, device: str, cfg: tuple[int, int]) -> None:
    """``.to(device)``, ``.double()``, ``.half()``, ``.to(dtype)`` move and convert ``pe``, and forward adds the
    converted table. The contract asks no more of the values than the float32 table they came from had (the table
    "computed in float64 and cast once"): a cast keeps that accuracy, a rebuild beats it (``strict.pe-rebuilt``)."""
    d_model, seq_len = cfg
    note(f"d_model={d_model}, seq_len={seq_len}, device={device}")
    table = paper_sinusoid(seq_len, d_model)
    config = {"d_model": d_model, "seq_len": seq_len, "device": device}
    module = construct(impl.PositionalEncoding, d_model, seq_len, 0.0, dtype=torch.float32).to(device)
    assert module.pe.device.type == device and module.pe.dtype == torch.float32
    module.double()
    assert module.pe.dtype == torch.float64 and module.pe.device.type == device
    assert_table_close(module.pe[0], table, dtype=torch.float32, angle_dtype=torch.float64,
                       component="float32 module .double() pe", config=config)
    x = torch.randn(2, seq_len, d_model, dtype=torch.float64, device=device)
    assert torch.equal(module(x), x + module.pe[:, :seq_len]), "forward does not add the converted table"
    for dtype in (torch.float16, torch.bfloat16):
        module.half() if dtype == torch.float16 else module.to(dtype=dtype)
        assert module.pe.dtype == dtype and module.pe.device.type == device
        assert_table_close(module.pe[0], table, dtype=dtype, angle_dtype=torch.float32,
                           component=f"pe after conversion to {dtype}", config=config)


@pytest.mark.strict("`.double()` rebuilds `pe` from the float64 formula instead of casting the float32 table")
@pytest.mark.clause("strict.pe-rebuilt")
@given(cfg=pe_configs(max_d_model=64, lengths=st.integers(1, 2100)))
def test_positional_encoding_double_rebuilds_the_table(impl, device: str, cfg: tuple[int, int]) -> None:
    """A float32 module converted with ``.double()`` is float64-accurate (a float32 table cast to float64 is not)."""
    d_model, seq_len = cfg
    note(f"d_model={d_model}, seq_len={seq_len}, device={device}")
    module = construct(impl.PositionalEncoding, d_model, seq_len, 0.0, dtype=torch.float32).to(device).double()
    assert_table_close(module.pe[0], paper_sinusoid(seq_len, d_model), dtype=torch.float64,
                       component="float32 module .double() pe", config={"d_model": d_model, "seq_len": seq_len})


@pytest.mark.strict("`model.double()` rebuilds both positional tables from the float64 formula")
@pytest.mark.clause("strict.pe-rebuilt")
def test_transformer_double_makes_positional_tables_float64_accurate(impl) -> None:
    """A float32 model converted with ``.double()``: both tables float64-accurate, past position 2048."""
    cfg = ModelConfig(src_seq_len=2100, tgt_seq_len=40, d_model=12, N=1, h=2, d_ff=8)
    model = build_model(impl, cfg, dtype=torch.float32).double()
    for name, length in (("src_pos", cfg.src_seq_len), ("tgt_pos", cfg.tgt_seq_len)):
        pe = getattr(model, name).pe
        assert pe.dtype == torch.float64, f"{name}.pe is {pe.dtype} after .double()"
        assert_table_close(pe[0], paper_sinusoid(length, cfg.d_model), dtype=torch.float64,
                           component=f"{name}.pe after model.double()", config={"seq_len": length})
