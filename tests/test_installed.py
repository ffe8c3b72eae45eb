"""The kit run from a user's own repository (issue 25): the built wheel, installed into a fresh virtual environment,
runs its suite with ``scratch-transformer-check`` from an empty directory that holds only the user's module, and
writes the card of that module.

The fresh environment takes the wheel alone (``pip install --no-deps --no-index``); its dependencies (torch,
hypothesis, pytest, ...) come from the environment running this test, seen through a ``.pth`` file (its
site-packages directory, appended after the new one's), so the run needs no network and no second torch. Nothing of
this clone is on the new environment's path: the suite, the plugin and the kit are the wheel's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = [pytest.mark.clause("kit"), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert run.returncode == 0, (f"{' '.join(map(str, cmd))} exited {run.returncode}:\n"
                                 f"{run.stdout[-3000:]}{run.stderr[-3000:]}")
    return run


def test_installed_check_runs_the_suite_on_a_module_outside_the_repository(tmp_path: Path) -> None:
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("an installed copy of the suite: the wheel is built from a clone")
    src = tmp_path / "src"  # a copy, so the build leaves nothing (build/, *.egg-info) in the clone
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv*", "venv", "build", "dist", "*.egg-info",
                                                           "__pycache__", ".hypothesis", ".pytest_cache", "mutants",
                                                           "docs", "benchmarks"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels),
          str(src)])
    (wheel,) = wheels.glob("scratch_transformer-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_scratch_transformer_test_deps.pth").write_text("\n".join(sorted(here)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
          str(wheel)])

    user = tmp_path / "user"  # the user's repository: their module and nothing else
    user.mkdir()
    shutil.copy(ROOT / "tests" / "positive_controls" / "independent.py", user / "usermod.py")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    env["CI"] = "true"
    check = venv / ("Scripts" if os.name == "nt" else "bin") / "scratch-transformer-check"
    run = _run([str(check), "usermod", "-m", "smoke", "--card-json", "card.json"], cwd=user,
               env=env)
    assert str(site) in run.stdout, f"the suite did not run from the installed copy:\n{run.stdout[-2000:]}"
    assert str(ROOT / "tests") not in run.stdout, run.stdout[-2000:]
    card = json.loads((user / "card.json").read_text())
    assert card["impl"] == "usermod", card["impl"]
    statuses = {c["clause"]: c["status"] for c in card["clauses"]}
    assert "FAIL" not in statuses.values(), {k: v for k, v in statuses.items() if v == "FAIL"}
    assert list(statuses.values()).count("pass") >= 5, statuses
    where = _run([str(python), "-c", "import reference, tests; print(reference.__file__, tests.__file__)"],
                 cwd=user, env=env).stdout
    assert str(ROOT) not in where and str(site) in where, where
