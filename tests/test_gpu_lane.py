"""The GPU lane script (``benchmarks/gpu_lane.sh``, issue 26): its argument handling, checked on any machine; on one
without CUDA it must say so and exit non-zero, never pretend to have run the lane."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.clause("kit")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_lane.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_gpu_lane_usage_and_bad_arguments() -> None:
    helped = _run("--help")
    assert helped.returncode == 0 and "OUTDIR" in helped.stdout and "no CUDA device" in helped.stdout, helped
    bad = _run("--bogus")
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr, bad
    two = _run("a", "b")
    assert two.returncode == 2 and "at most one argument" in two.stderr, two


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the lane would run")
def test_gpu_lane_refuses_without_cuda(tmp_path: Path) -> None:
    out = tmp_path / "lane"
    done = _run(str(out))
    assert done.returncode == 3, done
    assert "no CUDA device" in done.stderr and "nothing run" in done.stderr, done.stderr
    assert not out.exists(), "the script wrote results without a GPU"
