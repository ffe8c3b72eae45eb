"""The run's verdict, in one place: its exit status from the card and pytest's own status, and which FAILs are
roots and which follow from them (:func:`follows`); the suite's plugin, the card, the report and
``scratch-transformer-check`` use it alike.

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
from reference.spec.clauses import CONTRACT, GIVEN

NOT_JUDGED = 6
#: Card statuses that are no verdict on a clause the selection covers.
UNJUDGED_STATUSES = ("not reached", "skipped")


def follows(card: Card) -> dict[str, tuple[str, ...]]:
    """For each FAILed clause, the root clauses its FAIL follows from (empty: the clause is a root).

    A FAIL of clause C **follows** when it is explained by other FAILs:

    * every failing test of C relies on a clause G that FAILs: an oracle test relies on C's ``[given]`` clauses
      (``clauses.toml``: the paper's oracle, end to end or masked), a test that judges C on its own evidence
      (``@pytest.mark.own_evidence``: a property, a composite against the implementation's own children, float32
      against its own float64) only on the clauses its marker's ``given=`` names (usually none);
    * the card says how C's own evidence stands: its own-evidence tests that passed (they clear C of a bug of its
      own), or none (the attribution then rests on the dependency alone: "own evidence: none passed"). A failing
      own-evidence test that relies on nothing is always a root: a wrong wiring under a wrong child shows both.

    C then follows from G's roots (G itself when G is a root). Every other FAIL is a root. A group of FAILs that
    explain only each other (no root among them) are all roots, except a member whose own evidence ran and passed
    while another member's did not (that evidence separates them): it follows from the others. Nothing here turns a
    FAIL into a pass: the exit status is the same."""
    records = {c: r for c, r in card.records.items() if r.failed}
    parents: dict[str, list[str]] = {}
    for c, rec in records.items():
        explaining: list[str] = []
        for nodeid, _ in rec.failed:
            relies = rec.own_failed.get(nodeid, GIVEN.get(c, ()))
            found = [g for g in relies if g in records]
            if not found:  # one failure nothing explains: a root
                explaining = []
                break
            explaining += found
        if explaining:
            parents[c] = list(dict.fromkeys(explaining))
    reach = {c: _reachable(c, parents) for c in records}

    def cleared(c: str) -> bool:  # its own-evidence tests ran and every one passed
        return records[c].own_passed > 0 and not records[c].own_failed

    # a FAIL nothing explains is a root; so is each member of a group that explains only itself (every clause it
    # reaches reaches it back: no evidence outside the group explains it), unless its own evidence clears it and
    # the group has a member it does not clear (the attention formula right without a mask, under a masking FAIL)
    roots = {c for c in records if c not in parents
             or (all(c in reach[g] for g in reach[c]) and not (cleared(c) and any(not cleared(g) for g in reach[c])))}
    return {c: () if c in roots else tuple(g for g in records if g in roots and g in reach[c]) for c in records}


def _reachable(start: str, parents: dict[str, list[str]]) -> set[str]:
    """The FAILs that explain ``start``, directly or through others (``start`` included only through a cycle)."""
    seen: set[str] = set()
    todo = list(parents.get(start, ()))
    while todo:
        g = todo.pop()
        if g not in seen:
            seen.add(g)
            todo.extend(parents.get(g, ()))
    return seen


def own_evidence_note(card: Card, clause: str) -> str:
    """How a following FAIL's own evidence stands: its own-evidence tests that pass, "none passed" (they failed
    too, each explained by a FAIL it relies on) or "none ran"."""
    rec = card.records[clause]
    if rec.own_passed:
        return f"its {rec.own_passed} own-evidence test(s) pass"
    return "own evidence: none passed" if rec.own_seen else "own evidence: none ran"


@dataclass
class Verdict:
    exit_status: int
    #: (clause, status, detail) of each contract clause selected but not judged.
    unjudged: list[tuple[str, str, str]] = field(default_factory=list)
    accepted: bool = False
    #: Each FAILed clause -> the roots it follows from (empty for a root): :func:`follows`.
    follows: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Each following FAIL -> how its own evidence stands (:func:`own_evidence_note`).
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def roots(self) -> list[str]:
        return [c for c, f in self.follows.items() if not f]

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
                "unjudged": [{"clause": c, "status": s, "detail": d} for c, s, d in self.unjudged],
                "roots": self.roots, "following": {c: list(f) for c, f in self.follows.items() if f}}

    def card_lines(self, card: Card, width: int = 150) -> list[str]:
        """The card as text, its FAILs attributed (roots first)."""
        return card.lines(width, follows=self.follows, notes=self.notes)


def decide(card: Card, pytest_status: int, *, accept_unjudged: bool = False) -> Verdict:
    """The exit status of a run whose tests ended with ``pytest_status`` and filled ``card``."""
    unjudged = [(r["clause"], r["status"], r["detail"]) for r in card.rows()
                if r["tier"] == CONTRACT and r["status"] in UNJUDGED_STATUSES]
    status = pytest_status
    if pytest_status == 0 and unjudged and not accept_unjudged:
        status = NOT_JUDGED
    attributed = follows(card)
    return Verdict(status, unjudged, accepted=accept_unjudged and pytest_status == 0 and bool(unjudged),
                   follows=attributed, notes={c: own_evidence_note(card, c) for c, f in attributed.items() if f})
