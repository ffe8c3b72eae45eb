"""The component registry (``reference.kit.components``) is complete and agrees with the rest of the kit.

Generic tests over every record, as PyTorch's OpInfo tests iterate ``op_db``: one snake_case name per component
(the oracle's, the torch reference's, the report's), known clauses, a builder that gives the contract class with the
parameters and attributes the record lists, and a torch reference layer that computes the oracle's function at every
contract path of a full model.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from reference.spec import clauses
from reference.kit import components
from reference.oracles import numpy_ref, torch_ref
from reference.kit.components import COMPONENTS, REPORT_CLAUSES
from reference.spec.contract import ModelConfig, build_model, randomize_parameters_
from reference.report.hooks import CONTRACT_CLASSES, contract_class
from reference.oracles.masks import random_case
from reference.kit.weights import CONTRACT_EPS, extract_weights, to_numpy
from tests.support import SEEDS, assert_float64_close

pytestmark = pytest.mark.clause("kit")

BUILT = [name for name, info in COMPONENTS.items() if info.build is not None]


def test_one_name_per_component_for_oracle_torch_reference_and_report() -> None:
    """``numpy_ref.<name>`` and ``torch_ref.<name>`` are the record's, and every report row is ``<name>``,
    ``<name>/<variant>`` or ``grad/<name>``."""
    for name, info in COMPONENTS.items():
        for ref in (info.oracle, info.torch_reference):
            assert ref is None or ref.__name__ == name, (name, ref)
    for row in REPORT_CLAUSES:
        base = row.removeprefix("grad/").split("/")[0]
        assert base in COMPONENTS, f"report row {row!r} is not named after a registry component"


def test_registry_clauses_exist() -> None:
    known = set(clauses.CLAUSES)
    for info in COMPONENTS.values():
        unknown = (set(info.clauses) | {c for cs in info.report.values() for c in cs}) - known
        assert not unknown, f"{info.name}: unknown clause(s) {sorted(unknown)}"


def test_hooked_classes_are_the_registry_submodules() -> None:
    """The localiser hooks every contract submodule, and can re-run the references on each one's inputs (the
    residual's sublayer output comes from the calls themselves)."""
    assert CONTRACT_CLASSES == {i.contract for i in COMPONENTS.values() if i.is_class and i.probe_path}
    assert "Transformer" not in CONTRACT_CLASSES
    for info in COMPONENTS.values():
        if info.contract in CONTRACT_CLASSES and info.name != "residual":
            assert info.apply is not None and info.oracle is not None and info.torch_reference is not None, info.name


@pytest.mark.parametrize("name", BUILT)
def test_build_gives_the_contract_class_with_its_parameters_and_attributes(impl, device, name: str) -> None:
    """``components.build`` gives the record's class, with every parameter the oracle needs and every attribute the
    record lists (parameters beyond the contract are allowed: the oracle ignores them)."""
    cfg = ModelConfig(src_vocab_size=7, tgt_vocab_size=9, src_seq_len=5, tgt_seq_len=6, d_model=8, N=2, h=2,
                      dropout=0.0, d_ff=12)
    info = COMPONENTS[name]
    module = components.build(impl, name, cfg, device=device, dtype=torch.float64)
    assert contract_class(module) == info.contract
    own = dict(module.named_parameters())
    assert set(info.parameters) <= set(own), f"{name} lacks {sorted(set(info.parameters) - set(own))}"
    for attr, kind in info.attributes.items():  # "weights" (attention_scores) exists only after a forward
        assert kind == "weights" or hasattr(module, attr), f"{info.contract} has no attribute {attr!r}"
    if name in ("encoder", "decoder"):
        assert len(module.layers) == cfg.N


@given(seed=SEEDS, batch=st.integers(1, 3), h=st.sampled_from([1, 2, 4]), n=st.integers(1, 2))
def test_torch_reference_computes_the_oracle_at_every_contract_path(impl, device, seed: int, batch: int, h: int,
                                                                    n: int) -> None:
    """``torch_ref.Twin`` (every ``torch_ref`` function) in float64 on a model's weights equals the float64 NumPy
    oracle at every path ``numpy_ref.transformer`` traces, attention weights included."""
    cfg = ModelConfig(src_vocab_size=11, tgt_vocab_size=13, src_seq_len=7, tgt_seq_len=6, d_model=4 * h, N=n, h=h,
                      dropout=0.0, d_ff=12)
    note({"seed": seed, "batch": batch, "h": h, "N": n})
    model = randomize_parameters_(build_model(impl, cfg, device=device, dtype=torch.float64), seed)
    case = random_case(cfg, batch=batch, seed=seed, device=device)
    twin = torch_ref.trace(model, case.src, case.tgt, case.src_mask, case.tgt_mask, h=h)
    oracle: dict = {}
    numpy_ref.transformer(to_numpy(case.src), to_numpy(case.tgt), to_numpy(case.src_mask), to_numpy(case.tgt_mask),
                          extract_weights(model), h, CONTRACT_EPS, trace=oracle, N=cfg.N, d_ff=cfg.d_ff)
    assert set(twin) == set(oracle)
    for path, expected in oracle.items():
        assert_float64_close(twin[path], expected, component=f"torch_ref at {path}", config={"seed": seed})
