"""The suite is a conformance kit: ``--impl`` tests an implementation living elsewhere, through the contract only."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reference.spec.contract import DEFAULT_IMPL, missing_extras
from tests.conformance.blog_api import write_blog_api_impl

pytestmark = pytest.mark.clause("kit")

ROOT = Path(__file__).resolve().parents[1]
#: Modules run against the copies: quick ones that together touch every component.
MODULES = ["tests/test_contract.py", "tests/test_shapes.py", "tests/test_init.py", "tests/test_inputs.py"]


#: The numerical modules, run on the blog-only copy in the slow tier: every equivalence and gradient property must
#: reach a model built through the blog's own ``build_transformer`` (no device=/dtype= keywords).
NUMERICAL_MODULES = ["tests/test_equivalence_oracle.py", "tests/test_equivalence_torch.py", "tests/test_gradients.py",
                     "tests/test_masking.py"]


def _run_suite(impl_name: str, pythonpath: Path, modules: list[str] = MODULES) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{pythonpath}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "CI": "true", "HYPOTHESIS_PROFILE": "ci"}
    return subprocess.run([sys.executable, "-m", "pytest", *modules, "--impl", impl_name, "--device", "cpu",
                           "-q", "-rs", "-p", "no:cacheprovider"],
                          cwd=ROOT, env=env, capture_output=True, text=True)


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
    with pytest.raises(TypeError):
        module.build_transformer(5, 5, 4, 4, 8, 1, 2, 0.0, 16, dtype=None)


def test_suite_runs_against_an_implementation_elsewhere(blog_api_copy) -> None:
    """A copy with only the blog's API passes on its numbers; what needs an extra skips, naming the extra."""
    name, directory = blog_api_copy
    result = _run_suite(name, directory)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"--impl {name} failed:\n{output[-4000:]}"
    assert " passed" in output and not re.search(r"\b\d+ errors?\b", output), output[-2000:]
    assert "implementation lacks causal_mask" in output and "implementation lacks padding_mask" in output
    assert "beyond the contract (strict.bad-inputs)" in output and "--strict-tier runs it" in output


@pytest.mark.slow  # ~1-2 min: the numerical modules in a subprocess
def test_blog_only_copy_runs_the_equivalence_and_gradient_modules(blog_api_copy) -> None:
    """The equivalence, gradient and masking modules judge a blog-only implementation (built
    by its own keyword-free ``build_transformer``): they pass, and only what needs an extra is skipped."""
    name, directory = blog_api_copy
    result = _run_suite(name, directory, NUMERICAL_MODULES)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"--impl {name} failed:\n{output[-4000:]}"
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|skipped|failed|errors?)", output.splitlines()[-1])}
    reasons = set(re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", output))
    allowed = ("implementation lacks", "beyond the contract", "CUDA", "float16", "TF32")
    unexplained = sorted(r for r in reasons if not any(a in r for a in allowed))
    assert counts.get("passed", 0) >= 50 and not unexplained, f"{counts}; skips not due to a missing extra: {unexplained}"
