"""Negative controls: the suite catches every one of the known-wrong implementations (issue 7).

Each control in ``tests/negative_controls/`` is the correct implementation with one realistic bug. The kill matrix
(``python -m tests.negative_controls.kill_matrix`` -> ``docs/kill-matrix.md``) runs the whole suite against each and
records the tests that caught it in ``expected_kills.json``; here, cheaply enough for CI, every control is run
against the fastest of its recorded killing tests (``-x``: the first failure suffices), and the correct
implementation against all of those tests together. These tests judge the suite, not ``--impl``: they run only for
the default implementation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from reference.contract import DEFAULT_IMPL, ModelConfig, build_model, load_impl
from tests.negative_controls import EXPECTED_KILLS, control_names, dotted, load_control
from tests.negative_controls.kill_matrix import COMMAND, ROOT, child_env, tier

pytestmark = pytest.mark.clause("kit")

#: The issue's list: every one of these components has at least one control.
REQUIRED_COMPONENTS = frozenset({
    "embeddings", "positional table", "layer norm", "feed-forward", "attention scaling", "attention softmax",
    "attention masking", "attention head split/merge", "residual order", "encoder wiring", "decoder wiring",
    "final norms", "projection", "mask helpers", "initialisation", "dtype/device handling", "numerical stability",
})
MIN_CONTROLS = 20
#: The blog's own deviations that must stay in the catalogue (its LayerNorm, float32 table, -1e9 fill).
BLOG_CONTROLS = ("layernorm_blog", "pe_float32_table", "attn_fill_minus_1e9")
#: How many of a control's recorded killing tests (the fastest) the CI check runs.
KILLS_PER_CONTROL = 3
TIMEOUT_S = 900


@pytest.fixture(scope="module", autouse=True)
def _default_impl_only(impl_name: str) -> None:
    if impl_name != DEFAULT_IMPL:
        pytest.skip(f"the negative-control meta-tests judge the suite, not --impl {impl_name}")


def expected_kills() -> dict:
    if not EXPECTED_KILLS.exists():
        pytest.fail(f"{EXPECTED_KILLS.relative_to(ROOT)} is missing: run `{COMMAND}`")
    return json.loads(EXPECTED_KILLS.read_text())


def test_negative_controls_catalogue_covers_every_component() -> None:
    names = control_names()
    assert len(names) >= MIN_CONTROLS, f"only {len(names)} negative controls; the issue asks for {MIN_CONTROLS}+"
    components = {load_control(n).COMPONENT for n in names}
    assert REQUIRED_COMPONENTS <= components, f"no control for: {sorted(REQUIRED_COMPONENTS - components)}"
    assert set(BLOG_CONTROLS) <= set(names), f"blog deviations missing: {sorted(set(BLOG_CONTROLS) - set(names))}"


@pytest.mark.parametrize("name", control_names())
def test_negative_control_is_one_change_that_imports_and_runs(name: str) -> None:
    """A control is a complete implementation: it loads, builds and runs cleanly; its bug is one small patch.

    Source and target have the same length: the cross-attention controls raise on a mask shape otherwise.
    """
    module = load_impl(dotted(name))
    assert isinstance(module.BUG, str) and module.BUG and "\n" not in module.BUG
    assert module.COMPONENT in REQUIRED_COMPONENTS | {"dropout", "attention projections", "attention weights"}
    assert 1 <= len(module.PATCHES) <= 3, f"{name}: {len(module.PATCHES)} patches; a control is one change"
    torch.manual_seed(0)
    model = build_model(module, ModelConfig(), dtype=torch.float32).eval()
    src, tgt = torch.randint(1, 11, (2, 5)), torch.randint(1, 13, (2, 5))
    src_mask = (src != 0)[:, None, None, :]
    tgt_mask = torch.tril(torch.ones(1, 5, 5, dtype=torch.bool))
    logits = model.project(model.decode(model.encode(src, src_mask), src_mask, tgt, tgt_mask))
    assert logits.shape == (2, 5, 13) and bool(torch.isfinite(logits).all())


def test_kill_matrix_records_a_kill_for_every_control() -> None:
    record = expected_kills()
    names = control_names()
    stale = sorted(set(names) ^ set(record["controls"]))
    assert not stale, f"expected_kills.json is stale for {stale}: run `{COMMAND}`"
    holes = [n for n in names if not record["controls"][n]["kills"]]
    assert not holes, (f"holes in the suite: nothing catches {holes} (see docs/kill-matrix.md); "
                       "add a property that does, never drop the control")


def _fastest_kills(kills: dict[str, list]) -> list[str]:
    """The recorded killing tests of one control that are cheapest to run on it and on the correct implementation
    together (``kills[nodeid] = [exception, seconds on the control, seconds on the correct one]``), at most
    ``KILLS_PER_CONTROL``."""
    return sorted(kills, key=lambda nodeid: (sum(kills[nodeid][1:]), nodeid))[:KILLS_PER_CONTROL]


def _run(entries: list[dict]) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="negative-controls-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps(entries))
        proc = subprocess.run([sys.executable, "-m", "tests.negative_controls._run", str(spec), str(out)],
                              cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
        assert out.exists(), f"the control runner crashed:\n{(proc.stdout + proc.stderr)[-4000:]}"
        results = json.loads(out.read_text())
    assert len(results) == len(entries), f"the runner stopped early:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return results


def test_negative_controls_are_caught_and_the_correct_implementation_is_not() -> None:
    """Every control fails at least one of its recorded killing tests; ``scratch_transformer`` passes them all."""
    record = expected_kills()
    names = [n for n in control_names() if record["controls"].get(n, {}).get("kills")]
    chosen = {n: _fastest_kills(record["controls"][n]["kills"]) for n in names}
    union = sorted({nodeid for ids in chosen.values() for nodeid in ids})
    if not union:
        pytest.skip("no recorded kills (see test_kill_matrix_records_a_kill_for_every_control)")
    args = ["--device", "cpu", "-q"]
    examples = record.get("max_examples")  # the matrix's own number, so recorded kills reproduce exactly
    entries = [{"impl": DEFAULT_IMPL, "args": [*union, *args], "max_examples": examples}]
    entries += [{"impl": dotted(n), "args": [*chosen[n], *args, "-x", *(["--strict-tier"] if tier(n) == "strict"
                                                                        else [])],
                 "max_examples": examples} for n in names]
    baseline, *results = _run(entries)

    hint = f"(exit {{}}; if the recorded tests were renamed, run `{COMMAND}`)"
    not_passing = {k: v["message"] for k, v in baseline["outcomes"].items() if v["outcome"] in ("failed", "error")}
    assert baseline["exit"] == 0 and not not_passing and not baseline["collect_errors"], (
        f"the correct implementation fails the killing tests {hint.format(baseline['exit'])}: "
        f"{not_passing or baseline['collect_errors']}")
    missed = []
    for name, result in zip(names, results):
        failed = [k for k, v in result["outcomes"].items() if v["outcome"] == "failed"]
        if not failed:
            errors = {k: v["message"] for k, v in result["outcomes"].items() if v["outcome"] == "error"}
            missed.append(f"{name} ({load_control(name).BUG}): none of {chosen[name]} failed "
                          f"{hint.format(result['exit'])} {errors or result['collect_errors'] or ''}")
    assert not missed, "negative controls not caught:\n" + "\n".join(missed)
