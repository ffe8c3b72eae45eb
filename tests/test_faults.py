"""Fault injection of the kit itself (issue 32): on a faulty module or a bad option, the kit's verdict is truthful.

Each case of ``tests/faults/cases.py`` (a faulty implementation from ``tests/faults/``, or the correct model with a
bad ``--impl-map``, ``--card-json``, ``--xfails-file`` or ``--device``) runs its command (the smoke tier or the
equivalence report) in a fresh process from the repository root, ``CI=true``, stdin closed, killed with its whole
process group at the case's timeout (60 s for the hangs: the kit must judge them within that). The exit status must
be the case's target (0 passed, 1 a clause failed, 2 the module cannot be imported, 4 usage error, 6 not judged) and
the first informative message (``tests.faults.cases.first_message``) must match the case's regex.
``python -m tests.faults.table`` prints the same runs as a table.
"""

from __future__ import annotations

import re

import pytest

from tests.faults.cases import CASES, Case, run

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.clause("kit")]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fault_gets_a_truthful_verdict(case: Case) -> None:
    outcome = run(case)
    message = outcome.message(case.kind)
    context = (f"{case.shown()}\nexit {outcome.exit} (target {case.expected_exit}) after {outcome.wall_s:.1f} s; "
               f"first message: {message!r}\n--- stdout (tail) ---\n{outcome.stdout[-3000:]}\n"
               f"--- stderr (tail) ---\n{outcome.stderr[-3000:]}")
    exit_ok = outcome.exit == case.expected_exit  # plain names: the context below is the whole report
    assert exit_ok, context
    message_ok = re.search(case.message, message) is not None
    assert message_ok, f"first message does not match {case.message!r}\n{context}"
