"""Positive controls: every implementation that is correct under the contract passes the suite (specificity).

Each control in ``tests/positive_controls/`` differs from ``scratch_transformer`` the way real code does (fused
attention, another LayerNorm algorithm, the blog's table, the blog-only API, an independently written model) and
breaks no contract clause. The kill matrix (``python -m tests.negative_controls.kill_matrix``) runs the whole
non-slow suite on each and records, in ``expected_kills.json``, that none fails and a selection of tests for this
re-check: the cheapest test of every module plus the tests that kill negative controls of the same component. A
failure here is a false alarm: the suite asserts more than the contract, or a tolerance no correct algorithm meets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from reference.spec import variants
from reference.spec.contract import DEFAULT_IMPL, ModelConfig, build_model
from reference.kit.load import load_impl
from tests import positive_controls
from tests.positive_controls import _cards
from tests.negative_controls.kill_matrix import COMMAND
from tests.support import expected_kills, run_controls, skip_unless_default_impl

pytestmark = pytest.mark.clause("kit")
#: The issue's floor on the catalogue.
MIN_CONTROLS = 10
#: Variants the catalogue must keep (each a way real code differs that once raised a false alarm).
REQUIRED = ("attn_sdpa", "attn_neg_inf_nan_to_num", "attn_blog_fill_dtype_safe", "ln_functional", "ln_textbook",
            "ln_var_mean", "pe_blog_float64", "attn_heads_einsum", "attn_softmax_float64", "blog_api", "independent",
            "dropout_functional", "dropout_identity_at_zero", "extra_identity_module")


@pytest.fixture(scope="module", autouse=True)
def _default_impl_only(impl_name: str) -> None:
    skip_unless_default_impl(impl_name, "positive-control")


def recorded() -> dict:
    """The kill matrix's record of the positive controls."""
    return expected_kills().get("positive", {})


def test_positive_controls_catalogue() -> None:
    names = positive_controls.control_names()
    assert len(names) >= MIN_CONTROLS, f"only {len(names)} positive controls; at least {MIN_CONTROLS} wanted"
    assert set(REQUIRED) <= set(names), f"missing: {sorted(set(REQUIRED) - set(names))}"


@pytest.mark.parametrize("name", positive_controls.control_names())
def test_positive_control_imports_builds_and_runs(name: str) -> None:
    module = load_impl(positive_controls.dotted(name))
    assert isinstance(module.VARIANT, str) and module.VARIANT and "\n" not in module.VARIANT
    assert isinstance(module.COMPONENT, str) and module.COMPONENT
    torch.manual_seed(0)
    model = build_model(module, ModelConfig(), dtype=torch.float32).eval()
    src, tgt = torch.randint(1, 11, (2, 5)), torch.randint(1, 13, (2, 5))
    logits = model.project(model.decode(model.encode(src, None), None, tgt,
                                        torch.tril(torch.ones(1, 5, 5, dtype=torch.bool))))
    assert logits.shape == (2, 5, 13) and bool(torch.isfinite(logits).all())


def test_kill_matrix_records_every_positive_control_passing() -> None:
    """The full non-slow suite ran on every positive control and failed nowhere (``expected_kills.json``)."""
    record = recorded()
    stale = sorted(set(positive_controls.control_names()) ^ set(record))
    assert not stale, f"expected_kills.json is stale for positive controls {stale}: run `{COMMAND}`"
    alarms = {name: entry["failed"] for name, entry in record.items() if entry["failed"]}
    assert not alarms, f"false alarms recorded by the kill matrix (docs/kill-matrix.md): {alarms}"
    for name, entry in record.items():
        assert entry["passed"] > 100 and entry["selection"], f"{name}: too little of the suite ran ({entry})"
        modules = {n.split("::")[0] for n in entry["selection"]}
        assert len(modules) >= 10, f"{name}: the recorded selection covers only {sorted(modules)}"


@pytest.mark.slow  # ~75 s: twelve pytest sessions
def test_positive_controls_pass_their_recorded_selection() -> None:
    """Every positive control passes the recorded selection of tests, the way the kill matrix ran them."""
    record = recorded()
    examples = expected_kills().get("max_examples")
    names = [n for n in positive_controls.control_names() if record.get(n, {}).get("selection")]
    if not names:
        pytest.skip("no recorded selection (see test_kill_matrix_records_every_positive_control_passing)")
    entries = [{"impl": positive_controls.dotted(n), "max_examples": examples,
                "args": [*record[n]["selection"], "--device", "cpu", "-q", *positive_controls.variant_args(n)]}
               for n in names]
    alarms = []
    for name, result in zip(names, run_controls(entries)):
        bad = {k: v["message"] for k, v in result["outcomes"].items() if v["outcome"] in ("failed", "error")}
        bad.update(result["collect_errors"])
        if bad or result["exit"] not in (0, 5):
            alarms.append(f"{name} ({record[name]['variant']}): exit {result['exit']}, {bad}")
    assert not alarms, "false alarms on correct implementations:\n" + "\n".join(alarms)


@pytest.mark.slow  # ~20 s: the smoke tier twice
@pytest.mark.parametrize("name", _cards.with_expected_failures())
def test_a_16bit_arithmetic_control_fails_only_its_numerics_clauses(name: str) -> None:
    """A positive control correct in float32/float64 that computes in 16 bits (``arith_16bit``): on the smoke tier
    its card shows FAIL only on its ``EXPECTED_FAIL_CLAUSES`` (16-bit numerics, never a formula or masking clause),
    and with ``--dtypes float32,float64`` it passes; both cards as recorded (``python -m
    tests.positive_controls._cards --expected``)."""
    allowed = set(positive_controls.load_control(name).EXPECTED_FAIL_CLAUSES)
    runs = _cards.smoke_cards(name)
    every, narrow = runs["all"], runs["float32,float64"]
    fails = {c for c, s in every["card"].items() if s == "FAIL"}
    assert every["card"] and fails <= allowed, f"{name}: FAIL on {sorted(fails - allowed)}:\n{every['tail']}"
    assert narrow["exit"] == 0 and "FAIL" not in narrow["card"].values(), (
        f"{name} fails with --dtypes float32,float64:\n{narrow['tail']}")
    expected = json.loads((_cards.HERE / "expected" / f"{name}.json").read_text())
    assert {m: r["card"] for m, r in runs.items()} == expected, (
        f"{name}'s smoke cards changed: review and run `python -m tests.positive_controls._cards --expected`")


def _smoke_card(impl: str, *extra: str) -> tuple[int, str, dict[str, str]]:
    """(exit status, output, {clause: status}) of the smoke tier (``CI=true``, ``--device cpu``) on ``impl``."""
    with tempfile.TemporaryDirectory(prefix="variant-card-") as tmp:
        path = Path(tmp) / "card.json"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "smoke", "-p", "no:cacheprovider", "-p",
                               "no:xdist", "--device", "cpu", "--impl", impl, "--card-json", str(path), *extra],
                              cwd=_cards.ROOT, capture_output=True, text=True, env={**os.environ, "CI": "true"})
        card = {r["clause"]: r["status"] for r in json.loads(path.read_text())["clauses"]} if path.exists() else {}
    return proc.returncode, proc.stdout + proc.stderr, card


DECLARING = [n for n in positive_controls.control_names()
             if getattr(positive_controls.load_control(n), "DECLARED_VARIANT", None)]


@pytest.mark.slow  # ~20 s: the smoke tier three times
@pytest.mark.parametrize("name", DECLARING)
def test_a_declared_variant_is_judged_by_its_own_clause(name: str) -> None:
    """A control that declares a variant (``post_norm``): on the smoke tier under ``--variant`` it passes, its
    variant's residual clause passes and the default's is "not run", and the header and the card name the variant;
    without ``--variant`` it FAILs ``residual.pre-norm``, and ``scratch_transformer`` under its variant FAILs the
    variant's clause (the clause judges, both ways)."""
    declared = positive_controls.load_control(name).DECLARED_VARIANT
    own, default = variants.residual_clause(declared), variants.residual_clause(variants.DEFAULT_VARIANT)
    code, out, card = _smoke_card(positive_controls.dotted(name), *positive_controls.variant_args(name))
    assert code == 0 and card[own] == "pass" and card[default] == "not run", out[-2000:]
    assert f"variant: {declared}" in out and f"(variant {declared}):" in out, out[-2000:]
    code, out, card = _smoke_card(positive_controls.dotted(name))
    assert code == 1 and card[default] == "FAIL" and card[own] == "not run", out[-2000:]
    code, out, card = _smoke_card(DEFAULT_IMPL, "--variant", declared)
    assert code == 1 and card[own] == "FAIL", out[-2000:]
