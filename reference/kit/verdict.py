"""The run's verdict, in one place: its exit status from the card and pytest's own status (the suite's plugin, the
card and ``scratch-transformer-check`` use it alike).

Exit statuses (README, "Exit codes"): pytest's own, 0 (every test selected passed), 1 (a test failed: a clause
FAILed), 2 (interrupted: the implementation could not be imported), 3 (internal error), 4 (usage error: an option,
``--impl-map`` or ``--device`` the kit cannot honour), 5 (no test collected), and the kit's

* ``NOT_JUDGED`` = 6: no test failed, but a **contract** clause the selection covers got no verdict: its tests were
  not reached (an API deviation nothing maps, a hang) or all skipped. "No green on nothing": a run exits 0 only when
  every contract clause it selected was judged and none FAILed. ``--accept-unjudged`` accepts them explicitly (exit
  0), and the run prints each one it accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reference.kit.card import Card
from reference.spec.clauses import CONTRACT

NOT_JUDGED = 6
#: Card statuses that are no verdict on a clause the selection covers.
UNJUDGED_STATUSES = ("not reached", "skipped")


@dataclass
class Verdict:
    exit_status: int
    #: (clause, status, detail) of each contract clause selected but not judged.
    unjudged: list[tuple[str, str, str]] = field(default_factory=list)
    accepted: bool = False

    def lines(self) -> list[str]:
        if not self.unjudged:
            return []
        if self.exit_status not in (0, NOT_JUDGED):  # a FAIL decides: what it stopped is on the card
            return [f"verdict: exit {self.exit_status}; {len(self.unjudged)} more contract clause(s) selected but "
                    "not judged (see the card)"]
        # exit 0 with clauses unjudged: --accept-unjudged accepted them; else the run exits NOT_JUDGED
        head = (f"verdict: {len(self.unjudged)} contract clause(s) selected but not judged, accepted by "
                "--accept-unjudged:" if self.accepted else
                f"verdict: exit {self.exit_status} (not judged): {len(self.unjudged)} contract clause(s) selected but "
                "not judged (--accept-unjudged accepts them):")
        return [head] + [f"  {status:<11} {clause:<26} {detail}" for clause, status, detail in self.unjudged]

    def to_json(self) -> dict[str, Any]:
        return {"exit_status": self.exit_status, "accepted_unjudged": self.accepted,
                "unjudged": [{"clause": c, "status": s, "detail": d} for c, s, d in self.unjudged]}


def decide(card: Card, pytest_status: int, *, accept_unjudged: bool = False) -> Verdict:
    """The exit status of a run whose tests ended with ``pytest_status`` and filled ``card``."""
    unjudged = [(r["clause"], r["status"], r["detail"]) for r in card.rows()
                if r["tier"] == CONTRACT and r["status"] in UNJUDGED_STATUSES]
    status = pytest_status
    if pytest_status == 0 and unjudged and not accept_unjudged:
        status = NOT_JUDGED
    return Verdict(status, unjudged, accepted=accept_unjudged and pytest_status == 0 and bool(unjudged))
