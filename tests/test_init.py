"""``build_transformer`` initialisation and parameter count, as the blog builds the model."""

from __future__ import annotations

import pytest

import math

import torch
from hypothesis import given, note

from reference.contract import ModelConfig, build_model
from tests.strategies import model_configs

#: With n >= 128 draws from U(-b, b), max |w| < 0.8 b has probability 0.8^128 < 1e-12: a matrix initialised
#: with a narrower law (e.g. nn.Linear's default U(+-1/sqrt(fan_in)), 0.58 b for square weights) is caught.
XAVIER_FILL_FRACTION = 0.8
XAVIER_FILL_MIN_NUMEL = 128


def expected_parameter_count(cfg: ModelConfig) -> int:
    """Closed form: embeddings, N encoder blocks, N decoder blocks, two final norms, projection."""
    d, f, n = cfg.d_model, cfg.d_ff, cfg.N
    ffn = d * f + f + f * d + d
    norm = 2 * d
    encoder_block = 4 * d * d + ffn + 2 * norm
    decoder_block = 8 * d * d + ffn + 3 * norm
    return ((cfg.src_vocab_size + cfg.tgt_vocab_size) * d + n * encoder_block + norm + n * decoder_block + norm
            + d * cfg.tgt_vocab_size + cfg.tgt_vocab_size)


@pytest.mark.clause("build.structure")
@given(cfg=model_configs())
def test_build_transformer_parameter_count_matches_closed_form(impl, cfg: ModelConfig) -> None:
    model = build_model(impl, cfg)
    assert sum(p.numel() for p in model.parameters()) == expected_parameter_count(cfg)


@pytest.mark.clause("build.xavier")
@given(cfg=model_configs(max_d_model=64))
def test_build_transformer_matrices_are_xavier_uniform(impl, cfg: ModelConfig) -> None:
    """Every parameter with dim > 1 lies within sqrt(6 / (fan_in + fan_out)) and fills that range."""
    note(cfg)
    torch.manual_seed(0)
    model = build_model(impl, cfg)
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        fan_out, fan_in = p.shape[0], p[0].numel()
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        largest = float(p.detach().abs().max())
        assert largest <= bound * (1 + 1e-6), f"{name}: max |w| = {largest:.4g} exceeds the Xavier bound {bound:.4g}"
        if p.numel() >= XAVIER_FILL_MIN_NUMEL:
            assert largest >= XAVIER_FILL_FRACTION * bound, (
                f"{name} {tuple(p.shape)}: max |w| = {largest:.4g} < {XAVIER_FILL_FRACTION} * Xavier bound "
                f"{bound:.4g}: not drawn from U(-bound, bound)")


@pytest.mark.clause("build.xavier")
@given(cfg=model_configs())
def test_build_transformer_norms_and_biases_as_specified(impl, cfg: ModelConfig) -> None:
    """Norm gains are ones and shifts zeros; linear biases keep nn.Linear's U(+-1/sqrt(fan_in)); MHA has none."""
    model = build_model(impl, cfg)
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        if name.endswith("alpha"):
            assert torch.equal(p, torch.ones_like(p)), f"{name} is not ones"
        elif name.endswith("bias") and type(modules[name.rsplit(".", 1)[0]]).__name__ == "LayerNormalization":
            assert torch.equal(p, torch.zeros_like(p)), f"{name} is not zeros"
        elif name.endswith("bias"):
            fan_in = modules[name.rsplit(".", 1)[0]].weight.shape[1]
            assert float(p.detach().abs().max()) <= 1 / math.sqrt(fan_in) + 1e-7, f"{name} outside nn.Linear's bias range"
        if any(f".{w}." in f".{name}" for w in ("w_q", "w_k", "w_v", "w_o")):
            assert not name.endswith("bias"), f"{name}: attention projections have no bias"
