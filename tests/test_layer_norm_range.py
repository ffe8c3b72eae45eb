"""LayerNormalization over the whole range of float16 and bfloat16 (a hole found by the kill matrix).

Normalising in 16 bits instead of float32 (negative control ``layernorm_fp16_no_upcast``) is within the error-ratio
rule on unit-scale inputs (2-3x torch's error, under the floor), but a float16 row whose spread passes 256 squares
past float16's largest value (65504): the variance overflows to inf and the row normalises to zero (error ~3 at
|x| ~ 1e3, against torch's 1e-3). So the inputs here range over every scale of ``SCALES``, ``large`` included.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from reference.oracles import numpy_ref, torch_ref
from reference.judge import precision
from reference.judge.compare import assert_error_ratio, to_f64
from reference.spec.contract import construct, randomize_parameters_
from reference.kit.weights import CONTRACT_EPS, extract_weights
from tests.strategies import layer_norm_rows


#: The scales of ``SCALES`` by the clause they judge: unit and offset rows fit every 16-bit intermediate (accuracy);
#: tiny rows (|x| <= 1e-3: the variance underflows float16) and large ones (|x| <= 1e3: it overflows past 256) are
#: a range finding, since F.layer_norm accumulates in float32 and has neither.
ROW_SCALES = [pytest.param(("unit", "offset"), id="in-range", marks=pytest.mark.clause("numerics.16bit-accuracy")),
              pytest.param(("tiny", "large"), id="range", marks=pytest.mark.clause("numerics.16bit-range"))]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("scales", ROW_SCALES)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_layer_norm_low_precision_within_torch_error_at_every_scale(impl, device: str, dtype: torch.dtype,
                                                                    scales: tuple[str, ...], data, seed: int) -> None:
    """``err(impl) <= K * err(F.layer_norm) + floor`` against the float64 formula on the same 16-bit inputs."""
    rows = data.draw(layer_norm_rows(scales_=scales), label="rows")
    scale, x64 = rows
    features = x64.shape[-1]
    config = {"device": device, "dtype": str(dtype).removeprefix("torch."), "rows": x64.shape[0],
              "features": features, "scale": scale, "seed": seed}
    note(config)
    norm = randomize_parameters_(construct(impl.LayerNormalization, features, device=device, dtype=dtype), seed)
    # [1, rows, d]: the contract's [B, L, d] (any [..., d] is strict.any-leading-shape)
    x = torch.from_numpy(x64[None]).to(device=device, dtype=dtype)
    with torch.no_grad():
        got = norm(x)
        torch_out = torch_ref.layer_norm(x, norm.alpha, norm.bias, CONTRACT_EPS)
    w = extract_weights(norm)
    oracle = numpy_ref.layer_norm(to_f64(x).numpy(), w["alpha"], w["bias"], CONTRACT_EPS)
    with precision.explained(dtype, lambda: precision.diagnose(
            norm, (x,), dtype=dtype, oracle=oracle, torch_out=torch_out,
            torch_call=lambda m, a: torch_ref.layer_norm(a, m.alpha, m.bias, CONTRACT_EPS))):
        assert_error_ratio(got, torch_out, oracle, component="LayerNormalization", dtype=dtype, config=config,
                           label="F.layer_norm")
