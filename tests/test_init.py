"""``build_transformer`` initialisation and parameter count, as the blog builds the model."""

from __future__ import annotations

import pytest

import math

import torch
from hypothesis import given, note

from reference.spec.contract import ModelConfig, build_model
from reference.report.hooks import contract_class
from tests.strategies import model_configs

#: With n >= 128 draws from U(-b, b), max |w| < 0.8 b has probability 0.8^128 < 1e-12: a matrix initialised
#: with a narrower law (e.g. nn.Linear's default U(+-1/sqrt(fan_in)), 0.58 b for square weights) is caught.
XAVIER_FILL_FRACTION = 0.8
XAVIER_FILL_MIN_NUMEL = 128
#: The attention projections, whose biases are optional in the contract (any initial value; absent = zero).
PROJECTIONS = ("w_q", "w_k", "w_v", "w_o")


def is_projection_bias(name: str) -> bool:
    """``encoder.layers.0.self_attention_block.w_q.bias`` and the like."""
    return name.endswith(tuple(f".{w}.bias" for w in PROJECTIONS))


def expected_parameter_count(cfg: ModelConfig) -> int:
    """Closed form: embeddings, N encoder blocks, N decoder blocks, two final norms, projection (without the
    attention projections' optional biases)."""
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
    """The closed form, plus d for each attention projection that has its (optional) bias [d]."""
    model = build_model(impl, cfg)
    biases = {name: tuple(p.shape) for name, p in model.named_parameters() if is_projection_bias(name)}
    assert all(shape == (cfg.d_model,) for shape in biases.values()), f"projection biases of shapes {biases}"
    assert sum(p.numel() for p in model.parameters()) == expected_parameter_count(cfg) + cfg.d_model * len(biases)


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
    """Norm gains are ones and shifts zeros; the feed-forward and projection biases keep nn.Linear's
    U(+-1/sqrt(fan_in)). The attention projections' biases are optional in the contract, their initial values free
    (that this package has none is ``strict.no-projection-bias``)."""
    model = build_model(impl, cfg)
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        if name.endswith("alpha"):
            assert torch.equal(p, torch.ones_like(p)), f"{name} is not ones"
        elif name.endswith("bias") and contract_class(modules[name.rsplit(".", 1)[0]]) == "LayerNormalization":
            assert torch.equal(p, torch.zeros_like(p)), f"{name} is not zeros"
        elif name.endswith("bias") and not is_projection_bias(name):
            fan_in = modules[name.rsplit(".", 1)[0]].weight.shape[1]
            assert float(p.detach().abs().max()) <= 1 / math.sqrt(fan_in) + 1e-7, f"{name} outside nn.Linear's bias range"
