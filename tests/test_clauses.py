"""Every test names the contract clause it checks; tiers and docs/clauses.md's clause table agree with the markers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reference.spec import clauses
from reference.spec.contract import DEFAULT_IMPL
from tests import COLLECTED_CLAUSES

pytestmark = pytest.mark.clause("kit")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def collected(pytestconfig: pytest.Config) -> dict[str, list[str]]:
    """Every test function's clause ids: from this session's own collection when it collected the whole suite
    (the usual run), else from a ``--collect-only`` subprocess."""
    here = pytestconfig.stash.get(COLLECTED_CLAUSES, {})
    modules = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    if {name.split("::", 1)[0] for name in here} >= modules:
        return here
    return clauses.collect(str(ROOT))


def test_every_test_names_known_clauses(collected) -> None:
    unmarked = sorted(t for t, ids in collected.items() if not [c for c in ids if not c.startswith("@")])
    assert not unmarked, f"tests that name no clause (@pytest.mark.clause): {unmarked}"
    unknown = sorted({c for ids in collected.values() for c in ids if not c.startswith("@")} - set(clauses.CLAUSES))
    assert not unknown, f"unknown clause ids: {unknown} (reference/spec/clauses.py lists the clauses)"


def test_strict_marker_and_strict_clauses_agree(collected) -> None:
    """A test is in the strict tier exactly when it checks a strict clause, and then checks no contract clause."""
    for test, ids in collected.items():
        tiers = {clauses.tier(c) for c in ids if not c.startswith("@")}
        if "@strict" in ids:
            assert tiers == {clauses.STRICT}, f"{test} is marked strict but checks {sorted(ids)}"
        else:
            assert clauses.STRICT not in tiers, f"{test} checks a strict clause without the strict marker"


def test_every_clause_has_a_test(collected) -> None:
    by = clauses.tests_by_clause(collected)
    orphans = [c for c in clauses.CLAUSES if c not in by]
    assert not orphans, f"clauses no test checks: {orphans}"


def test_clause_table_is_current(collected) -> None:
    text = (ROOT / clauses.DOC).read_text()
    found = re.search(re.escape(clauses.TABLE_START) + ".*?" + re.escape(clauses.TABLE_END), text, re.S)
    assert found, f"{clauses.DOC} lacks the {clauses.TABLE_START} block"
    assert found.group(0) == clauses.clause_block(collected), (
        f"{clauses.DOC}'s clause table is stale: run `python -m reference.spec.clauses --write`")


def test_strict_tier_skips_for_a_foreign_impl_unless_asked(pytestconfig) -> None:
    """The tier switch itself: strict tests run for this package, skip as "beyond the contract" elsewhere.

    Both sessions (without and with ``--strict-tier``) run in one subprocess, one ``pytest.main`` after the other.
    """
    import subprocess
    import sys

    args = ["tests/test_inputs.py", "-q", "-p", "no:cacheprovider", "-rs", "--impl",
            "tests.positive_controls.ln_textbook"]
    code = ("import sys, pytest\n"
            f"a = {args!r}\n"
            "codes = [pytest.main(a), (print('@@opted', flush=True), pytest.main(a + ['--strict-tier']))[1]]\n"
            "print('@@codes', [int(c) for c in codes])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True).stdout
    assert "@@codes [0, 0]" in out, out[-1500:]
    skipped, opted = out.split("@@opted", 1)
    assert "beyond the contract (strict.bad-inputs)" in skipped, skipped[-800:]
    assert " passed" not in skipped
    assert " passed" in opted and "skipped" not in opted, opted[-800:]
    assert DEFAULT_IMPL == "scratch_transformer"


def test_dtype_table_is_current() -> None:
    text = (ROOT / clauses.DOC).read_text()
    found = re.search(re.escape(clauses.DTYPE_START) + ".*?" + re.escape(clauses.DTYPE_END), text, re.S)
    assert found and found.group(0) == clauses.dtype_block(), (
        f"{clauses.DOC}'s dtype table is stale: run `python -m reference.spec.clauses --write`")


def test_every_16bit_verdict_goes_to_a_numerics_clause() -> None:
    """The dtype rule (issue 23): a float16/bfloat16/TF32/autocast case counts for numerics clauses (and the
    dtype-free API/structure/state/extra/strict ones) only, never a formula, masking or behaviour clause; float32 and
    float64 cases never count for a 16-bit clause."""
    for cid in clauses.CLAUSES:
        judged = clauses.dtypes_judged(cid)
        if cid.split(".")[0] in ("embed", "ln", "ffn", "mha", "residual", "encoder", "decoder", "projection",
                                 "transformer", "mask", "dropout", "model") or cid == "pe.formula":
            assert judged == {"float64", "float32"}, (cid, judged)
        if cid.startswith("numerics.16bit"):
            assert judged == set(clauses.SIXTEEN_BIT), (cid, judged)
    assert clauses.judged_in(("mha.formula", "numerics.float32", "numerics.16bit-accuracy"), {"float16"}) == (
        "numerics.16bit-accuracy",)
    assert clauses.judged_in(("mha.formula", "numerics.float32", "numerics.16bit-accuracy"), {"float32"}) == (
        "mha.formula", "numerics.float32")
    assert clauses.judged_in(("api.names",), set()) == ("api.names",)


def test_dtypes_option_deselects_cases_and_the_card_says_not_run() -> None:
    """``--dtypes float32,float64`` deselects the 16-bit cases (not skips) and the card shows the 16-bit clauses
    "not run" naming ``--dtypes``; an unknown dtype is a usage error (exit 4)."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        card = Path(tmp) / "card.json"
        args = [sys.executable, "-m", "pytest", "tests/test_layer_norm_range.py", "tests/test_dropout_state.py", "-q",
                "-p", "no:cacheprovider", "-p", "no:xdist", "-k", "every_scale or binomial", "--device", "cpu"]
        proc = subprocess.run([*args, "--dtypes", "float32,float64", "--card-json", str(card)], cwd=ROOT,
                              capture_output=True, text=True, env={**__import__("os").environ, "CI": "true"})
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert "deselected" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-600:]
        rows = {r["clause"]: r for r in json.loads(card.read_text())["clauses"]}
        for cid in ("numerics.16bit-accuracy", "numerics.16bit-range", "numerics.16bit-semantics"):
            assert rows[cid]["status"] == "not run" and "--dtypes" in rows[cid]["detail"], rows[cid]
        assert rows["dropout.semantics"]["status"] == "pass", rows["dropout.semantics"]
        bad = subprocess.run([*args, "--dtypes", "float8"], cwd=ROOT, capture_output=True, text=True)
        assert bad.returncode == 4 and "unknown dtype" in bad.stderr + bad.stdout, bad.stderr[-500:]
