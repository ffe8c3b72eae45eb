"""Every test names the contract clause it checks; tiers and the README's clause table agree with the markers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reference import clauses
from reference.contract import DEFAULT_IMPL

pytestmark = pytest.mark.clause("kit")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def collected() -> dict[str, list[str]]:
    return clauses.collect(str(ROOT))


def test_every_test_names_known_clauses(collected) -> None:
    unmarked = sorted(t for t, ids in collected.items() if not [c for c in ids if not c.startswith("@")])
    assert not unmarked, f"tests that name no clause (@pytest.mark.clause): {unmarked}"
    unknown = sorted({c for ids in collected.values() for c in ids if not c.startswith("@")} - set(clauses.CLAUSES))
    assert not unknown, f"unknown clause ids: {unknown} (reference/clauses.py lists the clauses)"


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


def test_readme_clause_table_is_current(collected) -> None:
    text = (ROOT / clauses.README).read_text()
    found = re.search(re.escape(clauses.TABLE_START) + ".*?" + re.escape(clauses.TABLE_END), text, re.S)
    assert found, f"README.md lacks the {clauses.TABLE_START} block"
    assert found.group(0) == clauses.readme_block(collected), (
        "README.md's clause table is stale: run `python -m reference.clauses --write`")


def test_strict_tier_skips_for_a_foreign_impl_unless_asked(pytestconfig) -> None:
    """The tier switch itself: strict tests run for this package, skip as "beyond the contract" elsewhere."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "pytest", "tests/test_inputs.py", "-q", "-p", "no:cacheprovider", "-rs",
            "--impl", "tests.positive_controls.ln_textbook"]
    skipped = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert skipped.returncode == 0 and "beyond the contract (strict.bad-inputs)" in skipped.stdout, skipped.stdout[-800:]
    assert " passed" not in skipped.stdout
    opted = subprocess.run([*args, "--strict-tier"], cwd=ROOT, capture_output=True, text=True)
    assert opted.returncode == 0 and " passed" in opted.stdout and "skipped" not in opted.stdout, opted.stdout[-800:]
    assert DEFAULT_IMPL == "scratch_transformer"
