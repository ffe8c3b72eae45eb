"""Root test configuration: the implementation under test, devices, dtypes and Hypothesis profiles.

* ``--impl MODULE`` (or env ``SCRATCH_TRANSFORMER_IMPL``): the contract implementation to test
  (default ``scratch_transformer``).
* ``--device {cpu,cuda,all}``: narrow the ``device`` fixture (default: all; CUDA cases skip without a GPU).
* ``--hypothesis-profile {ci,dev,thorough}``: ``ci`` is the default when ``CI=true``, else ``dev``.
* ``--compile`` (``--compile-backend NAME``, default inductor; or env ``SCRATCH_TRANSFORMER_COMPILE=NAME``): every
  module the suite builds through ``reference.contract.construct``/``build_model`` runs under ``torch.compile``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # run from a bare working tree (e.g. the GPU machine) without installing
    sys.path.insert(0, str(ROOT))

from reference import contract  # noqa: E402
from reference.contract import DEFAULT_IMPL, load_impl  # noqa: E402

_common = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, database=None, max_examples=20, **_common)
settings.register_profile("dev", max_examples=40, **_common)
settings.register_profile("thorough", max_examples=400, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI", "").lower() == "true" else "dev"))

DEVICES = ("cpu", "cuda")

# The suite's tensors are tiny: intra-op threads cost more in synchronisation than they save (measured on the
# 2-core machine under load: a small model's forward 0.5 s with 2 threads, 11 ms with 1), and `pytest -n N` already
# fills the cores with processes.
torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("scratch-transformer")
    group.addoption("--impl", default=os.environ.get("SCRATCH_TRANSFORMER_IMPL", DEFAULT_IMPL),
                    help="module implementing the contract (default: scratch_transformer)")
    group.addoption("--device", default="all", choices=("cpu", "cuda", "all"),
                    help="run device-parametrised tests on this device only (default: all)")
    group.addoption("--compile", action="store_true", default=bool(contract.compile_backend),
                    help="run the suite on torch.compile'd modules (see --compile-backend)")
    group.addoption("--compile-backend", default=contract.compile_backend or "inductor",
                    help="torch.compile backend for --compile (default inductor; aot_eager/eager compile faster)")


def pytest_configure(config: pytest.Config) -> None:
    contract.compile_backend = config.getoption("--compile-backend") if config.getoption("--compile") else None


def pytest_report_header(config: pytest.Config) -> str:
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"scratch-transformer: impl={config.getoption('--impl')}, torch {torch.__version__}, cuda: {cuda}, "
            f"hypothesis profile: {settings._current_profile}, compile: {contract.compile_backend or 'no'}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    impl = config.getoption("--impl")
    if impl != DEFAULT_IMPL:
        skip = pytest.mark.skip(reason=f"strict_inputs: bad-input hardening is {DEFAULT_IMPL}'s own, "
                                       f"not part of the conformance contract (impl={impl})")
        for item in items:
            if "strict_inputs" in item.keywords:
                item.add_marker(skip)


def _device_params(config: pytest.Config) -> list:
    chosen = config.getoption("--device")
    names = DEVICES if chosen == "all" else (chosen,)
    params = []
    for name in names:
        marks = []
        if name == "cuda":
            marks = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason="CUDA is not available on this machine")]
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", _device_params(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def impl_name(pytestconfig: pytest.Config) -> str:
    """The dotted name of the implementation under test."""
    return pytestconfig.getoption("--impl")


@pytest.fixture(scope="session")
def impl(impl_name: str) -> ModuleType:
    """The implementation module under test (reached only through the contract)."""
    return load_impl(impl_name)
