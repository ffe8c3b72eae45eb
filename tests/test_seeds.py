"""Hypothesis seeds under the random profiles (dev, thorough): one per test, derived from the session's seed and the
test's node id (``tests.plugin.per_test_seed``), so sibling tests (the float32/float64 parametrisations, the
``_torch_mha``/``_sdpa`` variants) draw different examples, and ``--hypothesis-seed=N`` replays every test's draws.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.plugin import per_test_seed

pytestmark = pytest.mark.clause("kit")

ROOT = Path(__file__).resolve().parents[1]
#: Where ``test_seed_probe`` appends the examples it draws (only when set: the meta-test below sets it).
PROBE_ENV = "SCRATCH_TRANSFORMER_SEED_PROBE"


@pytest.mark.parametrize("sibling", ["first", "second"])
@given(x=st.integers(0, 2**64))
def test_seed_probe(sibling: str, x: int) -> None:
    """Two sibling parametrisations drawing one integer each example; with ``PROBE_ENV`` set, each example is
    appended to that file as a JSON line (node id, x)."""
    out = os.environ.get(PROBE_ENV)
    if out:
        nodeid = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
        with open(out, "a") as f:
            f.write(json.dumps({"nodeid": nodeid, "x": x}) + "\n")


def test_per_test_seed_differs_between_siblings_and_is_stable() -> None:
    """Distinct node ids get distinct seeds, the same node id and session seed the same one (an int session seed
    and its string from ``--hypothesis-seed`` agree)."""
    a, b = "tests/test_x.py::test_y[cpu-float32]", "tests/test_x.py::test_y[cpu-float64]"
    assert per_test_seed(7, a) != per_test_seed(7, b)
    assert per_test_seed(7, a) == per_test_seed(7, a) == per_test_seed("7", a)
    assert per_test_seed(7, a) != per_test_seed(8, a)


def _probe_draws(tmp_path: Path, seed: int, run: int) -> dict[str, list[int]]:
    out = tmp_path / f"draws-{seed}-{run}.jsonl"
    env = {**os.environ, PROBE_ENV: str(out), "CI": "false"}
    env.pop("HYPOTHESIS_PROFILE", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider",
                             "--hypothesis-profile", "dev", f"--hypothesis-seed={seed}",
                             "tests/test_seeds.py::test_seed_probe"], cwd=ROOT, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"hypothesis seed: {seed} (replay: --hypothesis-seed={seed}" in result.stdout, result.stdout
    draws: dict[str, list[int]] = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        draws.setdefault(row["nodeid"], []).append(row["x"])
    return draws


def test_sibling_parametrisations_draw_different_examples_and_replay(tmp_path: Path) -> None:
    """Under the random ``dev`` profile with ``--hypothesis-seed=N``: the two parametrisations of
    ``test_seed_probe`` draw different examples (one forced global seed drew the same), and a second run with the
    same N draws exactly the same examples per test."""
    first, again = _probe_draws(tmp_path, 12345, 0), _probe_draws(tmp_path, 12345, 1)
    assert len(first) == 2, sorted(first)
    one, two = first.values()
    assert one != two, f"sibling parametrisations drew the same examples: {one[:5]}"
    assert first == again, "the same --hypothesis-seed drew other examples"
    other = _probe_draws(tmp_path, 54321, 0)
    assert other != first, "another --hypothesis-seed drew the same examples"
