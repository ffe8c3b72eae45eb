"""reference/ is layered as docs/architecture.md says: ``lint-imports`` keeps the ``[tool.importlinter]`` contracts
of pyproject.toml (spec < oracles | judge < kit < report; no lower layer imports a higher one, no circle)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.clause("kit")
ROOT = Path(__file__).resolve().parents[1]


def test_reference_layers_are_kept() -> None:
    pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("an installed copy of the suite: the layers are checked in the source tree")
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    run = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"lint-imports: a layer contract is broken:\n{run.stdout[-4000:]}{run.stderr[-2000:]}"
