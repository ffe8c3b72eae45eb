"""The suite is a conformance kit: ``--impl`` tests an implementation living elsewhere, through the contract only."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reference.contract import DEFAULT_IMPL, missing_extras
from tests.conformance.blog_api import write_blog_api_impl

pytestmark = pytest.mark.clause("kit")

ROOT = Path(__file__).resolve().parents[1]
#: Modules run against the copies: quick ones that together touch every component.
MODULES = ["tests/test_contract.py", "tests/test_shapes.py", "tests/test_init.py", "tests/test_inputs.py"]


def _run_suite(impl_name: str, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{pythonpath}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "CI": "true", "HYPOTHESIS_PROFILE": "ci"}
    return subprocess.run([sys.executable, "-m", "pytest", *MODULES, "--impl", impl_name, "--device", "cpu",
                           "-q", "-rs", "-p", "no:cacheprovider"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def blog_api_copy(tmp_path_factory: pytest.TempPathFactory, impl_name: str) -> tuple[str, Path]:
    if impl_name != DEFAULT_IMPL:
        pytest.skip("the conformance meta-test copies scratch_transformer itself")
    directory = tmp_path_factory.mktemp("elsewhere")
    write_blog_api_impl(directory, "blog_api_copy")
    return "blog_api_copy", directory


def test_blog_api_copy_lacks_the_extras(blog_api_copy, monkeypatch: pytest.MonkeyPatch) -> None:
    name, directory = blog_api_copy
    monkeypatch.syspath_prepend(str(directory))
    import importlib
    module = importlib.import_module(name)
    assert missing_extras(module, "causal_mask", "padding_mask", "Transformer.forward", "factory_kwargs") == [
        "causal_mask", "padding_mask", "Transformer.forward", "device=/dtype= constructor keywords"]
    with pytest.raises(TypeError):
        module.LayerNormalization(4, dtype=None)


def test_suite_runs_against_an_implementation_elsewhere(blog_api_copy) -> None:
    """A copy with only the blog's API passes on its numbers; what needs an extra skips, naming the extra."""
    name, directory = blog_api_copy
    result = _run_suite(name, directory)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"--impl {name} failed:\n{output[-4000:]}"
    assert " passed" in output and not re.search(r"\b\d+ errors?\b", output), output[-2000:]
    assert "implementation lacks causal_mask" in output and "implementation lacks padding_mask" in output
    assert "beyond the contract (strict.bad-inputs)" in output and "--strict-tier runs it" in output
