"""The mismatch localiser (``reference.report.localize``): silent on a correct model, names the broken submodule first.

Broken variants are made at test time from the implementation under test, one change each, by overriding one
submodule's ``forward`` (or one contract class's, on every instance) through the contract's attribute names, so the
localiser is tested against *your* implementation broken in a known place. The project's catalogue of negative
controls (``tests/negative_controls``, whole implementations with one realistic bug) is run through it too.
"""

from __future__ import annotations

import json
import math
from typing import Callable, Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from torch import nn

from reference.spec import variants
from reference.oracles import numpy_ref
from reference.judge import tolerances
from reference.spec.contract import ModelConfig, build_model, randomize_parameters_
from reference.judge.compare import judge
from reference.report.hooks import CONTRACT_CLASSES, contract_class
from reference.report.localize import Localization, localize
from reference.oracles.masks import Case, random_case
from tests.negative_controls import load_control
from tests.positive_controls import load_control as load_positive_control
from tests.strategies import ModelInputs, dense_arrays, model_inputs
from tests.support import DTYPES, torch_threads

pytestmark = pytest.mark.clause("kit")

CFG = ModelConfig(src_vocab_size=11, tgt_vocab_size=13, src_seq_len=7, tgt_seq_len=6, d_model=16, N=2, h=2,
                  dropout=0.0, d_ff=32)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one torch thread is fastest, and fair to the other test processes."""
    with torch_threads(1):
        yield


def _tensor(a: np.ndarray | None, device: str) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device)


def _model(impl, cfg: ModelConfig, device: str, dtype: torch.dtype, seed: int) -> nn.Module:
    model = build_model(impl, cfg, device=device, dtype=dtype)
    return randomize_parameters_(model, seed).eval()


def _padded_case(device: str) -> Case:
    """CFG's inputs with real padding (second source sequence: 2 of 7 tokens) and a causal, padded target mask."""
    case = random_case(CFG, batch=2, seed=3, device=device)
    src_mask = case.src_mask.clone()
    src_mask[1, ..., 2:] = False
    return Case(case.src, case.tgt, src_mask, case.tgt_mask)


def _run(model: nn.Module, case: Case, dtype: torch.dtype, *, differential: bool = False) -> Localization:
    """Localise a model built from ``CFG`` (its h; the norms at the contract's default eps); the differential check
    only where a test judges it."""
    return localize(model, case.src, case.tgt, case.src_mask, case.tgt_mask, h=CFG.h, dtype=dtype, N=CFG.N,
                    d_ff=CFG.d_ff, differential=differential)


# --------------------------------------------------------------------------------------------------- silent
@given(inputs=model_inputs(max_d_model=32, max_N=2, max_len=8), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("dtype", DTYPES)
def test_localize_correct_impl_has_no_divergence(impl, device, dtype, inputs: ModelInputs, seed: int) -> None:
    """Every contract submodule of the implementation (random non-default weights) agrees with the float64 oracle
    within tolerance, every oracle path is executed and judged, attention weights included."""
    note(inputs.describe())
    model = _model(impl, inputs.cfg, device, dtype, seed)
    loc = localize(model, _tensor(inputs.src, device), _tensor(inputs.tgt, device),
                   _tensor(inputs.src_mask, device), _tensor(inputs.tgt_mask, device), h=inputs.cfg.h,
                   N=inputs.cfg.N, d_ff=inputs.cfg.d_ff)
    note(loc.summary(all_rows=True))
    assert loc.first_divergence is None, loc.summary()
    assert loc.missing == [] and loc.local is None
    judged = {r.path for r in loc.rows}
    expected = {p for p in loc.oracle_outputs}
    if not any(r.path.endswith(numpy_ref.WEIGHTS_SUFFIX) for r in loc.rows):  # no attention_scores attribute
        expected = {p for p in expected if not p.endswith(numpy_ref.WEIGHTS_SUFFIX)}
    assert judged == expected, f"not judged: {sorted(expected - judged)}; extra: {sorted(judged - expected)}"
    assert all(r.ok and math.isfinite(r.max_abs) for r in loc.rows)


def test_localize_hooks_every_contract_submodule_in_execution_order(impl, device) -> None:
    """Rows follow execution order (embeddings before their stack, each block before its parent finishes), and
    every contract submodule of the model is hooked."""
    model = _model(impl, CFG, device, torch.float64, 0)
    loc = _run(model, _padded_case(device), torch.float64)
    paths = [r.path for r in loc.rows if not r.path.endswith(numpy_ref.WEIGHTS_SUFFIX)]
    contract = [p for p, m in model.named_modules() if p and contract_class(m) in CONTRACT_CLASSES]
    assert sorted(paths) == sorted(contract)
    order = {p: i for i, p in enumerate(paths)}
    assert order["src_embed"] < order["src_pos"] < order["encoder.layers.0"] < order["encoder"]
    first, second = ("encoder.layers.0.residual_connections.0.norm", "encoder.layers.0.self_attention_block")
    if variants.variant() == variants.POST_NORM:  # norm(x + sublayer(x)): the sublayer runs before the norm
        first, second = second, first
    assert order[first] < order[second] < order["encoder.layers.0.residual_connections.0"] < order["encoder.layers.0"]
    assert order["encoder"] < order["decoder.layers.0.cross_attention_block"] < order["projection_layer"]
    assert paths[-1] == "projection_layer"


# --------------------------------------------------------------------------------------------------- broken
def _blog_norm(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: module.alpha * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + module.eps) \
        + module.bias


def _swapped_positions(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        pe = numpy_ref.positional_encoding_table(x.shape[1], x.shape[2])
        pe[:, 0::2], pe[:, 1::2] = pe[:, 1::2].copy(), pe[:, 0::2].copy()  # cos on even columns, sin on odd
        return x + torch.from_numpy(pe).to(x)
    return forward


def _ignores_mask(module: nn.Module) -> Callable:
    original = module.forward
    return lambda q, k, v, mask=None: original(q, k, v, None)


def _no_relu(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: module.linear_2(module.linear_1(x))


def _log_softmax(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    original = module.forward
    return lambda x: torch.log_softmax(original(x), dim=-1)


def _no_final_norm(module: nn.Module) -> Callable:
    def forward(x, mask):
        for layer in module.layers:
            x = layer(x, mask)
        return x
    return forward


def _every_layer_gets_the_input(module: nn.Module) -> Callable:
    def forward(x, mask):
        y = x
        for layer in module.layers:
            y = layer(x, mask)  # wiring bug: each layer reads the stack's input
        return module.norm(y)
    return forward


#: name -> (what to break: "path" or "Class:<name>", how, expected first divergence, expected culprit)
BREAKS = {
    "layer_norm_blog": ("Class:LayerNormalization", _blog_norm,
                        "encoder.layers.0.residual_connections.0.norm", "encoder.layers.0.residual_connections.0.norm"),
    "positions_swapped": ("src_pos", _swapped_positions, "src_pos", "src_pos"),
    "cross_attention_ignores_mask": ("decoder.layers.0.cross_attention_block", _ignores_mask,
                                     "decoder.layers.0.cross_attention_block",
                                     "decoder.layers.0.cross_attention_block"),
    "last_ffn_no_relu": ("encoder.layers.1.feed_forward_block", _no_relu, "encoder.layers.1.feed_forward_block",
                         "encoder.layers.1.feed_forward_block"),
    "projection_log_softmax": ("projection_layer", _log_softmax, "projection_layer", "projection_layer"),
    "encoder_no_final_norm": ("encoder", _no_final_norm, "encoder", "encoder"),
    "encoder_wiring": ("encoder", _every_layer_gets_the_input, "encoder.layers.1.residual_connections.0.norm",
                       "encoder"),
}


def _break(model: nn.Module, target: str, how: Callable) -> None:
    """Override ``forward`` of the submodule at ``target`` (or of every instance of a contract class)."""
    if target.startswith("Class:"):
        modules = [m for m in model.modules() if contract_class(m) == target.split(":", 1)[1]]
    else:
        modules = [model.get_submodule(target)]
    assert modules, f"nothing to break at {target}"
    for m in modules:
        m.forward = how(m)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(BREAKS))
def test_localize_names_the_broken_submodule_first(impl, device, dtype, name: str) -> None:
    """One submodule broken: it is the first divergence (by dotted path), and the local check blames the right
    code: the submodule itself when it is wrong on its own inputs, else the block whose forward fed it."""
    target, how, first, culprit = BREAKS[name]
    if name == "encoder_wiring" and variants.variant() == variants.POST_NORM:
        first = "encoder.layers.1.self_attention_block"  # norm(x + sublayer(x)): the attention sees the input first
    model = _model(impl, CFG, device, dtype, 1)
    case = _padded_case(device)
    assert _run(model, case, dtype).ok  # the same model before the break: clean
    _break(model, target, how)
    loc = _run(model, case, dtype)
    assert loc.first_divergence == first, loc.summary()
    assert loc.local is not None and loc.local.culprit == culprit, loc.summary()
    first_row = loc.row(first)
    assert first_row is not None and not first_row.ok
    assert all(r.ok for r in loc.rows[:loc.rows.index(first_row)])
    summary = loc.summary()
    assert f"first divergence at {first}" in summary and "local check:" in summary


#: Negative controls (whole implementations, one realistic bug) and the path the localiser must name first.
CONTROLS = {
    "decoder_cross_attn_self_kv": ("decoder.layers.0.cross_attention_block", "decoder.layers.0"),
    "decoder_ignores_tgt_mask": ("decoder.layers.0.self_attention_block", "decoder.layers.0"),
    "encoder_ignores_src_mask": ("encoder.layers.0.self_attention_block", "encoder.layers.0"),
    "attn_no_scale": ("encoder.layers.0.self_attention_block", "encoder.layers.0.self_attention_block"),
    "attn_stores_raw_scores": ("encoder.layers.0.self_attention_block:weights",
                               "encoder.layers.0.self_attention_block"),
    "attn_mask_inverted": ("encoder.layers.0.self_attention_block", "encoder.layers.0.self_attention_block"),
    "decoder_cross_attn_tgt_mask": ("decoder.layers.0.cross_attention_block", "decoder.layers.0"),
    "layernorm_blog": ("encoder.layers.0.residual_connections.0.norm", "encoder.layers.0.residual_connections.0.norm"),
    "layernorm_eps_is_features": ("encoder.layers.0.residual_connections.0.norm",
                                  "encoder.layers.0.residual_connections.0.norm"),
    "embed_no_sqrt_scale": ("src_embed", "src_embed"),
    "pe_sin_cos_swapped": ("src_pos", "src_pos"),
    "ffn_no_relu": ("encoder.layers.0.feed_forward_block", "encoder.layers.0.feed_forward_block"),
    "ffn_no_bias": ("encoder.layers.0.feed_forward_block", "encoder.layers.0.feed_forward_block"),
    "residual_post_norm": ("encoder.layers.0.self_attention_block", "encoder.layers.0"),
    "encoder_no_final_norm": ("encoder", "encoder"),
    "projection_log_softmax": ("projection_layer", "projection_layer"),
}


def _controls_are_pre_norm() -> None:
    """The kit tests below localise the controls, the blog's pre-norm model with one change each: under another
    ``--variant`` every oracle row would differ at the first norm, whatever the control's bug (not a finding)."""
    if variants.variant() != variants.PRE_NORM:
        pytest.skip(f"the controls are pre-norm models; this kit test runs under --variant {variants.PRE_NORM}")


@pytest.mark.parametrize("control", list(CONTROLS))
def test_localize_names_the_negative_controls_component(control: str) -> None:
    """Each control's bug is named as the first divergence, with the culprit the local check finds."""
    _controls_are_pre_norm()
    first, culprit = CONTROLS[control]
    module = load_control(control)
    model = _model(module, CFG, "cpu", torch.float64, 2)
    loc = _run(model, _padded_case("cpu"), torch.float64)
    assert (loc.first_divergence, loc.local.culprit if loc.local else None) == (first, culprit), loc.summary()


#: Roots the differential check narrows below the local check's culprit: the block is wired right, its residual
#: connection (every one, the same class) is not.
NARROWED = {"residual_post_norm": "encoder.layers.0.residual_connections.0"}
#: Controls whose culprit has no reference to swap in: a module that lacks a contract parameter.
NOT_SWAPPABLE = ("ffn_no_bias",)


@pytest.mark.parametrize("control", [c for c in CONTROLS if c not in NOT_SWAPPABLE])
def test_localize_differential_check_confirms_the_controls_one_root(control: str) -> None:
    """Swapping the culprit's class for the reference makes the whole model agree: one root, the culprit's."""
    _controls_are_pre_norm()
    model = _model(load_control(control), CFG, "cpu", torch.float64, 2)
    loc = _run(model, _padded_case("cpu"), torch.float64, differential=True)
    assert loc.swaps and loc.swaps[-1].agrees and loc.roots == [NARROWED.get(control, CONTROLS[control][1])], \
        loc.summary()


@pytest.mark.parametrize("control, roots", [
    ("double_no_scale_cross_self_kv", ["encoder.layers.0.self_attention_block", "decoder.layers.0"]),
    ("double_no_relu_no_final_norm", ["encoder.layers.0.feed_forward_block", "encoder"]),
])
def test_localize_differential_check_finds_both_roots_of_a_double_bug(control: str, roots: list[str]) -> None:
    """Two independent bugs: after the first culprit's swap the model still diverges, at the second; swapping both
    makes it agree. A correct model has no differential check at all."""
    _controls_are_pre_norm()
    model = _model(load_control(control), CFG, "cpu", torch.float64, 2)
    loc = _run(model, _padded_case("cpu"), torch.float64, differential=True)
    assert [c.agrees for c in loc.swaps] == [False, True] and loc.roots == roots, loc.summary()
    assert loc.to_json()["roots"] == roots


def test_localize_differential_check_is_not_a_pass_for_an_unswappable_culprit() -> None:
    """A culprit whose reference cannot run on its parameters: the check says it stops, the root stays the
    culprit, and the localisation still diverges."""
    _controls_are_pre_norm()
    model = _model(load_control("ffn_no_bias"), CFG, "cpu", torch.float64, 2)
    loc = _run(model, _padded_case("cpu"), torch.float64, differential=True)
    assert not loc.ok and not loc.swaps[-1].agrees and "stops" in loc.swaps[-1].verdict, loc.summary()
    assert loc.roots == ["encoder.layers.0.feed_forward_block"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_localize_judges_attention_projection_biases(dtype) -> None:
    """Projection biases (optional in the contract) are used by the oracle and the twin, not flagged as beyond the
    contract: a model with them is clean; the same model whose w_q ignores its bias diverges at that block first."""
    _controls_are_pre_norm()
    model = _model(load_positive_control("attn_proj_bias"), CFG, "cpu", dtype, 4)
    case = _padded_case("cpu")
    loc = _run(model, case, dtype)
    assert loc.ok and not [r.note for r in loc.rows if "beyond the contract" in r.note], loc.summary(all_rows=True)
    w_q = model.get_submodule("encoder.layers.0.self_attention_block.w_q")
    w_q.forward = lambda x: torch.nn.functional.linear(x, w_q.weight)  # bias dropped
    loc = _run(model, case, dtype)
    assert loc.first_divergence == "encoder.layers.0.self_attention_block", loc.summary()
    assert loc.local is not None and loc.local.culprit == "encoder.layers.0.self_attention_block", loc.summary()


def test_localize_flags_a_missing_contract_parameter() -> None:
    """An FFN without biases is flagged at its own path (its row notes the parameter), not somewhere downstream."""
    _controls_are_pre_norm()
    loc = _run(_model(load_control("ffn_no_bias"), CFG, "cpu", torch.float32, 0), _padded_case("cpu"),
               torch.float32)
    row = loc.row("encoder.layers.0.feed_forward_block")
    assert row is not None and not row.ok and "lacks contract parameter(s) linear_1.bias" in row.note
    assert loc.first_divergence == row.path


def test_localization_json_round_trips() -> None:
    """``to_json`` is strict JSON (a submodule that raised has infinite error, written "inf"): the first divergence,
    the local check and one entry per path."""
    _controls_are_pre_norm()
    model = _model(load_control("decoder_cross_attn_self_kv"), CFG, "cpu", torch.float64, 0)  # raises: Ls != Lt
    data = json.loads(json.dumps(_run(model, _padded_case("cpu"), torch.float64).to_json(), allow_nan=False))
    assert data["first_divergence"] == "decoder.layers.0.cross_attention_block"
    assert data["local_check"]["culprit"] == "decoder.layers.0" and data["local_check"]["max_abs"] == "nan"
    last = data["paths"][-1]
    assert last["path"] == data["first_divergence"] and last["max_abs"] == "inf" and last["note"].startswith("raised")
    assert {"path", "kind", "max_abs", "max_rel", "torch_abs", "tolerance", "allowed", "ok"} <= set(data["paths"][0])


# --------------------------------------------------------------------------------------------------- judge
@given(expected=dense_arrays((3, 5)), noise=dense_arrays((3, 5)), size=st.floats(0.0, 4.0),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_judge_direct_rule_matches_the_tolerance_table(expected, noise, size: float, dtype) -> None:
    """Direct rule: ok exactly when every |a - e| <= atol + rtol |e| with ``VALUE_TOL[dtype]``."""
    rtol, atol = tolerances.value_tol(dtype)
    actual = expected + noise * size * (atol + rtol * np.abs(expected))
    v = judge(actual, expected, dtype=dtype, rule="direct")
    note(v)
    assert v.ok == bool(np.all(np.abs(actual - expected) <= atol + rtol * np.abs(expected)))
    assert v.max_abs == pytest.approx(np.max(np.abs(actual - expected)), rel=1e-12, abs=0)


@given(expected=dense_arrays((4, 3)), impl_noise=dense_arrays((4, 3)), torch_noise=dense_arrays((4, 3)),
       impl_size=st.floats(0.0, 1e-4), torch_size=st.floats(0.0, 1e-4))
def test_judge_ratio_rule_matches_the_error_ratio_formula(expected, impl_noise, torch_noise, impl_size: float,
                                                          torch_size: float) -> None:
    """Ratio rule (float32): ok exactly when max|a - e| <= K max|t - e| + floor(float32, max|e|)."""
    actual, torch_out = expected + impl_noise * impl_size, expected + torch_noise * torch_size
    v = judge(actual, expected, dtype=torch.float32, torch_out=torch_out)
    impl_err, torch_err = np.max(np.abs(actual - expected)), np.max(np.abs(torch_out - expected))
    allowed = tolerances.allowed_error(torch.float32, torch_err, np.max(np.abs(expected)))
    note((v, impl_err, torch_err, allowed))
    assert v.rule == "ratio" and v.torch_abs == pytest.approx(torch_err, rel=1e-12, abs=0)
    assert v.ok == (impl_err <= allowed)


# --------------------------------------------------------------------------------------------------- wrong outputs
CONTRACT_SHAPE = (2, 5, 16)
#: What an implementation may return instead of its output, and what the judge must say of it.
WRONG_OUTPUTS = [
    pytest.param(torch.zeros(2, 5, 8), "output shape (2, 5, 8), the contract's is (2, 5, 16)", id="shape"),
    pytest.param((torch.zeros(2, 5, 16), torch.zeros(2, 2, 5, 5)), "returned tuple of 2 items (Tensor (2, 5, 16) "
                 "float32, Tensor (2, 2, 5, 5) float32); the contract wants a Tensor of shape (2, 5, 16)", id="tuple"),
    pytest.param(None, "returned None; the contract wants a Tensor of shape (2, 5, 16)", id="none"),
    pytest.param([torch.zeros(2, 5, 16)], "returned list of 1 item (Tensor (2, 5, 16) float32)", id="list"),
]


@pytest.mark.parametrize(("actual", "message"), WRONG_OUTPUTS)
def test_judge_names_what_came_back_instead_of_an_output(actual, message: str) -> None:
    """No tensor, or one of another shape: a failing "shape" verdict from ``judge``, and from every ``assert_*``
    helper a :class:`WrongOutput` (an AssertionError) naming the component, the config and what came back, raised
    before any arithmetic (a ``where`` shaped like the output must not reach the references first)."""
    from reference.judge.compare import (WrongOutput, assert_close, assert_error_ratio, assert_l2_error_ratio,
                                         check_output)

    expected, config = torch.zeros(CONTRACT_SHAPE, dtype=torch.float64), {"d_model": 16}
    where = torch.ones(np.shape(actual)[:-1] + (1,), dtype=torch.bool) if isinstance(actual, torch.Tensor) else None
    what = "MultiHeadAttentionBlock [d_model=16]: " + message
    v = judge(actual, expected, dtype=torch.float32, torch_out=expected.float(), component="MultiHeadAttentionBlock",
              config=config)
    assert (v.ok, v.rule) == (False, "shape") and v.message().startswith(what), v.message()
    calls = {
        "assert_close": lambda: assert_close(actual, expected, component="MultiHeadAttentionBlock", config=config,
                                             where=where),
        "assert_error_ratio": lambda: assert_error_ratio(actual, expected.float(), expected, where=where,
                                                         component="MultiHeadAttentionBlock", config=config,
                                                         dtype=torch.float32),
        "assert_l2_error_ratio": lambda: assert_l2_error_ratio({"out": actual}, {"out": expected.float()},
                                                               {"out": expected}, dtype=torch.float32,
                                                               component="MultiHeadAttentionBlock", config=config),
        "check_output": lambda: check_output(actual, CONTRACT_SHAPE, component="MultiHeadAttentionBlock",
                                             config=config),
    }
    for name, call in calls.items():
        with pytest.raises(WrongOutput) as caught:
            call()
        assert str(caught.value).startswith(what.replace("16]: ", "16], out: ") if name == "assert_l2_error_ratio"
                                            else what), f"{name}: {caught.value}"


def test_judge_takes_a_numpy_array_and_check_output_wants_a_tensor() -> None:
    """The judge compares arrays too (the oracles are NumPy); an implementation's output must be a Tensor."""
    from reference.judge.compare import WrongOutput, check_output

    assert judge(np.zeros(CONTRACT_SHAPE), np.zeros(CONTRACT_SHAPE), dtype=torch.float64).ok
    with pytest.raises(WrongOutput, match=r"returned numpy array \(2, 5, 16\) float64; the contract wants a Tensor"):
        check_output(np.zeros(CONTRACT_SHAPE), CONTRACT_SHAPE, component="FeedForwardBlock")


@pytest.mark.parametrize(("scores", "message"), [
    pytest.param(None, "after a forward `attention_scores` holds None, not the attention weights "
                 "(mha.static-attention: the block keeps the weights in `attention_scores`, a Tensor of shape "
                 "(2, 2, 5, 5))", id="none"),
    pytest.param(torch.zeros(2, 5, 5), "MultiHeadAttentionBlock.attention_scores [h=2]: output shape (2, 5, 5), the "
                 "contract's is (2, 2, 5, 5)", id="shape"),
])
def test_kept_weights_names_a_block_that_keeps_no_weights(scores, message: str) -> None:
    """``tests.support.kept_weights``: a block whose ``attention_scores`` is not the [B, h, Lq, Lk] weights fails
    with the clause's words, not a TypeError in the test."""
    from reference.judge.compare import WrongOutput
    from tests.support import kept_weights

    block = nn.Module()
    block.attention_scores = scores
    with pytest.raises(WrongOutput) as caught:
        kept_weights(block, (2, 2, 5, 5), config={"h": 2})
    assert message in str(caught.value), str(caught.value)


#: One-change faulty implementations (``tests.negative_controls._base.install`` patches of the correct base): the
#: patch, what each failing attention test must then say, and how many of ``FAULT_TESTS`` reach the fault.
OUTPUT = "        return self.w_o(x)\n"
FAULTS = {
    "wrong_shape": ([("model.py", OUTPUT, "        return self.w_o(x)[..., : self.d_model // 2]\n")],
                    "), the contract's is (", 4),
    "tuple_output": ([("model.py", OUTPUT, "        return self.w_o(x), self.attention_scores\n")],
                     "returned tuple of 2 items (Tensor (1, ", 4),
    "no_weights_kept": ([("model.py", "x, self.attention_scores = MultiHeadAttentionBlock",
                          "x, _ = MultiHeadAttentionBlock")], "after a forward `attention_scores` holds None", 3),
}
#: The judge's exception each fault fails with (``WeightsNotKept``: a WrongOutput of mha.static-attention's, the
#: finding test's own clauses not reached).
RAISED = {"wrong_shape": "WrongOutput", "tuple_output": "WrongOutput", "no_weights_kept": "WeightsNotKept"}
#: Attention tests through each of the judge's entry points: a test's own check before the error-ratio rule, the
#: direct rule after the oracle, a property test on the weights, an invariance under ``assert_close``.
FAULT_TESTS = ["tests/test_equivalence_torch.py::test_multi_head_attention_block_matches_torch_mha",
               "tests/test_equivalence_oracle.py::test_multi_head_attention_block_matches_oracle",
               "tests/test_masking.py::test_multi_head_attention_masked_keys_get_zero_weight",
               "tests/test_invariances.py::test_multi_head_attention_self_attention_is_permutation_equivariant"]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_faulty_attention_block_fails_its_clauses_with_a_readable_message(tmp_path, fault: str, impl_name: str
                                                                            ) -> None:
    """The suite on a block of the wrong output shape, one returning a tuple, one keeping no weights: each attention
    test that reaches the fault FAILs with the judge's message (what came back, what the contract wants), none
    crashes in the kit with a TypeError, RuntimeError or AttributeError."""
    import os
    import subprocess
    import sys

    from tests.negative_controls.kill_matrix import ROOT

    if impl_name != "scratch_transformer":
        pytest.skip("the faulty blocks are made from scratch_transformer itself")
    patches, message, reached = FAULTS[fault]
    (tmp_path / f"faulty_{fault}.py").write_text(
        f"from tests.negative_controls._base import install\ninstall(globals(), {patches!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "CI": "true"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--tb=line", "-rf",
                          "--impl", f"faulty_{fault}", "--dtypes", "float64", *FAULT_TESTS],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == reached, run.stdout[-4000:] + run.stderr[-2000:]
    assert all(f"{RAISED[fault]}: MultiHeadAttentionBlock" in line and message in line for line in failed), (
        "\n".join(failed))
