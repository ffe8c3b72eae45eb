"""The verdict's attribution of FAILs (``reference.kit.verdict.follows``): roots and what follows from them, on
hand-made cards (the controls' cards measure it end to end: tests/negative_controls/kill_matrix.py)."""

from __future__ import annotations

import json

import pytest

from reference.kit import verdict
from reference.kit.card import Card

pytestmark = pytest.mark.clause("kit")


def _fail(card: Card, clauses: tuple[str, ...], test: str, own: dict | tuple = ()) -> None:
    card.add(clauses, test, "failed", "AssertionError: x", own=own)


def _pass(card: Card, clauses: tuple[str, ...], test: str, own: dict | tuple = ()) -> None:
    card.add(clauses, test, "passed", own=own)


def test_a_composite_that_fails_only_through_its_child_follows_from_it() -> None:
    """A wrong attention formula (its own test fails) FAILs the encoder block's end-to-end test too; the block's own
    wiring test passes: the block follows from mha.formula, and so do the numerics measured against the paper."""
    card = Card("m")
    _fail(card, ("mha.formula",), "own_formula", own=("mha.formula",))
    _fail(card, ("encoder.block", "numerics.float64"), "end_to_end")
    _pass(card, ("encoder.block",), "wiring", own=("encoder.block",))
    follows = verdict.follows(card)
    assert follows == {"mha.formula": (), "encoder.block": ("mha.formula",), "numerics.float64": ("mha.formula",)}
    decided = verdict.decide(card, 1)
    assert decided.exit_status == 1 and decided.roots == ["mha.formula"]
    lines = decided.card_lines(card)
    assert "1 FAIL, 2 following from it" in lines[0]
    assert lines[1].split()[:2] == ["FAIL", "mha.formula"]  # the root first, with its first failing test
    assert "follows from mha.formula (its 1 own-evidence test(s) pass)" in "\n".join(lines)
    assert "own evidence: none ran" in "\n".join(lines)  # numerics.float64 here has no own test


def test_a_wrong_wiring_under_a_wrong_child_shows_two_roots() -> None:
    card = Card("m")
    _fail(card, ("mha.formula",), "own_formula", own=("mha.formula",))
    _fail(card, ("decoder.block",), "end_to_end")
    _fail(card, ("decoder.block",), "wiring", own=("decoder.block",))
    assert verdict.follows(card) == {"mha.formula": (), "decoder.block": ()}


def test_an_own_evidence_test_that_relies_on_a_clause_is_explained_by_its_fail() -> None:
    """``own_evidence(given=("mha.static-attention",))``: a zero-weight property read from ``attention_scores``
    fails when the block keeps raw scores; masking follows from mha.static-attention."""
    card = Card("m")
    _fail(card, ("mha.static-attention",), "distribution", own=("mha.static-attention",))
    _fail(card, ("mask.zero-weight",), "zero_weight", own={"mask.zero-weight": ("mha.static-attention",)})
    _pass(card, ("mask.zero-weight",), "removal", own=("mask.zero-weight",))
    assert verdict.follows(card) == {"mha.static-attention": (), "mask.zero-weight": ("mha.static-attention",)}


def test_fails_that_only_explain_each_other_are_all_roots() -> None:
    """mha.formula and mask.semantics each rely on the other in their oracle tests; with no own evidence failing,
    nothing separates them: both are roots (never a card with no root)."""
    card = Card("m")
    _fail(card, ("mha.formula", "mask.semantics"), "masked_oracle")
    _fail(card, ("encoder.block",), "end_to_end")
    follows = verdict.follows(card)
    assert follows["mha.formula"] == () and follows["mask.semantics"] == ()
    assert set(follows["encoder.block"]) == {"mha.formula", "mask.semantics"}


def test_in_a_group_that_explains_only_itself_a_member_its_own_evidence_clears_follows() -> None:
    """The report's attention rows: the unmasked row (mha.formula's own evidence) passes, the masked rows FAIL both
    clauses. mask.semantics is the root; mha.formula, cleared by its own evidence, follows from it. Once that own
    evidence fails too, mha.formula is the root (a failure that relies on nothing) and masking follows from it."""
    card = Card("m")
    _pass(card, ("mha.formula",), "unmasked", own=("mha.formula",))
    _fail(card, ("mha.formula", "mask.semantics"), "masked_oracle")
    assert verdict.follows(card) == {"mha.formula": ("mask.semantics",), "mask.semantics": ()}
    _fail(card, ("mha.formula",), "unmasked_again", own=("mha.formula",))
    assert verdict.follows(card) == {"mha.formula": (), "mask.semantics": ("mha.formula",)}


def test_a_fail_nothing_explains_is_a_root_and_nothing_turns_into_a_pass(tmp_path) -> None:
    card = Card("m")
    _fail(card, ("ffn.formula",), "own")
    _fail(card, ("build.xavier",), "init")
    decided = verdict.decide(card, 1)
    assert decided.follows == {"ffn.formula": (), "build.xavier": ()} and decided.exit_status == 1
    path = tmp_path / "card.json"
    card.write(path, follows=decided.follows, verdict=decided.to_json())
    rows = {r["clause"]: r for r in json.loads(path.read_text())["clauses"]}
    assert rows["ffn.formula"]["status"] == "FAIL" and rows["ffn.formula"]["follows_from"] == []
    assert "follows_from" not in rows["mha.formula"]  # only FAIL rows carry it
    assert json.loads(path.read_text())["verdict"]["roots"] == ["ffn.formula", "build.xavier"]


def test_a_non_finite_value_is_attributed_to_whoever_produced_it() -> None:
    """The implementation's own NaN used as the expected value (eager vs compiled, masked vs removed keys) or held
    in a parameter is its finding (``NonFiniteOutput``, an assertion of the test's clause); a NaN of the paper's
    oracle stays a test error (``NonFiniteReference``)."""
    import torch
    from torch import nn

    from reference.judge.compare import NonFiniteOutput, NonFiniteReference, assert_close
    from reference.kit.weights import extract_weights

    nan = torch.tensor([1.0, float("nan")], dtype=torch.float64)
    ok = torch.tensor([1.0, 2.0], dtype=torch.float64)
    with pytest.raises(NonFiniteOutput, match="implementation's own expected value is non-finite"):
        assert_close(ok, nan, component="compiled block", expected_from_impl=True)
    with pytest.raises(NonFiniteReference):
        assert_close(ok, nan, component="block against the oracle")
    assert not issubclass(NonFiniteOutput, NonFiniteReference) and issubclass(NonFiniteOutput, AssertionError)
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteOutput, match="parameter 'weight' is non-finite"):
        extract_weights(lin)
