"""The kit's guards (``reference.kit.guard``) and the verdict (``reference.kit.verdict``), unit by unit; the
fault-injection suite (``tests/test_faults.py``) runs them end to end on faulty modules."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from reference.kit import guard, verdict
from reference.kit.card import Card

pytestmark = pytest.mark.clause("kit")


def test_watchdog_turns_an_overrun_into_model_hung_naming_the_call() -> None:
    start = time.monotonic()
    with pytest.raises(guard.ModelHung, match=r"spin\(\) did not return within 0\.2 s"):
        with guard.watchdog().limit(0.2, "spin()"):
            while True:
                time.sleep(0.005)
    assert time.monotonic() - start < 2


def test_model_hung_passes_through_a_models_except_exception() -> None:
    """A ``BaseException``: the model's own ``except Exception`` cannot swallow the verdict."""
    with pytest.raises(guard.ModelHung):
        with guard.watchdog().limit(0.1, "swallow()"):
            try:
                while True:
                    time.sleep(0.005)
            except Exception:  # noqa: BLE001: what a careless model does
                pass


def test_nested_deadlines_fire_the_nearest_and_leave_no_timer_behind() -> None:
    dog = guard.watchdog()
    with pytest.raises(guard.ModelHung, match="inner"):
        with dog.limit(5, "outer"), dog.limit(0.1, "inner"):
            time.sleep(1)
    with dog.limit(0.3, "quick"):
        pass
    time.sleep(0.4)  # nothing fires once its block ended


class _Add(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x += 1  # in place: the input changes under the caller
        return x


class _Clean(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + 1


def test_call_guard_names_the_module_and_the_input_it_modified_in_place() -> None:
    g = guard.CallGuard((_Add, _Clean), call_timeout=None).install()
    try:
        _Clean()(torch.zeros(3), torch.ones(3, dtype=torch.bool))  # a clean call passes
        with pytest.raises(guard.ImpureCall, match=r"_Add\.forward modified its input `x` in place"):
            _Add()(torch.zeros(3), torch.ones(3, dtype=torch.bool))
        assert g.depth == 0
    finally:
        g.remove()


def test_call_guard_times_each_outermost_forward() -> None:
    class Slow(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(2)
            return x

    g = guard.CallGuard((Slow,), call_timeout=0.2).install()
    try:
        with pytest.raises(guard.ModelHung, match=r"Slow\.forward did not return within 0\.2 s"):
            Slow()(torch.zeros(1))
    finally:
        g.remove()


def test_global_state_changes_are_named_and_restored() -> None:
    before = guard.snapshot()
    try:
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        changed = guard.changes(before, guard.snapshot())
    finally:
        guard.restore(before)
    assert changed == ["the default dtype (torch.set_default_dtype): torch.float32 -> torch.float64",
                       "grad mode (torch.set_grad_enabled): True -> False"]
    assert guard.snapshot() == before


def test_kit_clause_finds_the_guard_exception_in_groups_and_chains() -> None:
    inner = guard.ImpureCall("x")
    try:
        try:
            raise inner
        except guard.ImpureCall as exc:
            raise ValueError("wrapped") from exc
    except ValueError as outer:
        assert guard.kit_clause(outer) == (guard.PURE, inner)
    assert guard.kit_clause(ExceptionGroup("g", [ValueError(), inner])) == (guard.PURE, inner)
    assert guard.kit_clause(ValueError("plain")) is None


def test_memory_cap_makes_a_huge_allocation_fail_at_once() -> None:
    """Under the cap a 16 GiB request fails with an allocation error (never actually paged in)."""
    with guard.memory_cap(1 << 30), pytest.raises(RuntimeError) as info:
        torch.empty(16 << 30, dtype=torch.uint8).fill_(1)
    assert guard.is_allocation_failure(info.value), str(info.value)
    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)  # and the limit is lifted after the block


def _card(**statuses: str) -> Card:
    card = Card("m")
    for clause, status in statuses.items():
        clause = clause.replace("_", ".", 1).replace("_", "-")
        if status == "pass":
            card.add((clause,), "t", "passed")
        elif status == "not reached":
            card.add((clause,), "t", "skipped", "not reached because of api.names: x")
        else:
            card.add((clause,), "t", "skipped", "CUDA is not available")
    return card


def test_verdict_exit_6_when_a_selected_contract_clause_got_no_verdict() -> None:
    card = _card(mha_formula="pass", ffn_formula="not reached")
    decided = verdict.decide(card, 0)
    assert decided.exit_status == verdict.NOT_JUDGED == 6
    assert [c for c, _, _ in decided.unjudged] == ["ffn.formula"]
    assert "not judged" in decided.lines()[0]
    accepted = verdict.decide(card, 0, accept_unjudged=True)
    assert accepted.exit_status == 0 and accepted.accepted and "ffn.formula" in accepted.lines()[1]


def test_verdict_keeps_pytests_status_when_everything_was_judged_or_something_failed() -> None:
    assert verdict.decide(_card(mha_formula="pass"), 0).exit_status == 0
    assert verdict.decide(_card(ffn_formula="not reached"), 1).exit_status == 1
    assert verdict.decide(_card(mha_formula="skipped"), 0).exit_status == 6  # every test skipped: no verdict
    strict = Card("m")
    strict.add(("strict.bad-inputs",), "t", "skipped", "beyond the contract")  # strict/extra tiers: not judged
    assert verdict.decide(strict, 0).exit_status == 0
