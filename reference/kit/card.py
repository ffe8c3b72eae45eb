"""The conformance card: one line per contract clause, from the outcomes of the tests that name it.

A clause is **pass** (its tests passed, none failed), **FAIL** (the first failing test and its message), **deviation**
(the API diagnosis found a deviation against it; mapped or not), **xfail** (its failures were accepted through
``--xfails-file``), **not reached** (its tests were skipped because an API deviation stopped them), **skipped**
(every test skipped for another reason: a missing extra, the strict tier off, no CUDA) or **not run** (deselected,
or the residual clause of another variant than the run's: ``reference.spec.variants``). The header names the run's
variant.
The suite's pytest plugin (``tests/plugin.py``, loaded by the root ``conftest.py``) feeds it; ``--card-json PATH``
writes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from reference.spec import variants
from reference.spec.clauses import CLAUSES, DTYPES, KIT, dtypes_judged

NOT_REACHED = "not reached because of"
ORDER = ("FAIL", "deviation", "xfail", "not reached", "pass", "skipped", "not run")


@dataclass
class ClauseRecord:
    passed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (nodeid, one-line message)
    xfailed: int = 0
    xpassed: list[str] = field(default_factory=list)  # accepted failures (--xfails-file) that passed
    not_reached: list[str] = field(default_factory=list)  # reasons
    skipped: int = 0
    deviations: list[str] = field(default_factory=list)


@dataclass
class Card:
    impl: str
    records: dict[str, ClauseRecord] = field(default_factory=dict)
    #: The dtypes the run judges (``--dtypes``): a clause that judges none of them is "not run" for that reason.
    dtypes: frozenset[str] = frozenset(DTYPES)
    #: Clauses this machine cannot judge, with the reason (no CUDA: ``numerics.tf32``): "not run" with it.
    unavailable: dict[str, str] = field(default_factory=dict)
    #: The declared variant the run judged (``--variant``): its header says so; another variant's clause is "not run".
    variant: str = field(default_factory=variants.variant)

    def add(self, clauses: Iterable[str], nodeid: str, outcome: str, message: str = "") -> None:
        """One test's outcome ("passed", "failed", "xfailed", "xpassed", "skipped") against each clause it names."""
        for c in clauses:
            rec = self.records.setdefault(c, ClauseRecord())
            if outcome == "passed":
                rec.passed += 1
            elif outcome == "failed":
                rec.failed.append((nodeid, message))
            elif outcome == "xfailed":
                rec.xfailed += 1
            elif outcome == "xpassed":
                rec.passed += 1
                rec.xpassed.append(nodeid)
            elif message.startswith(NOT_REACHED) or NOT_REACHED in message:
                rec.not_reached.append(message[message.find(NOT_REACHED):])
            else:
                rec.skipped += 1

    def deviation(self, clause: str, message: str) -> None:
        self.records.setdefault(clause, ClauseRecord()).deviations.append(message)

    def status(self, clause: str) -> tuple[str, str]:
        """(status, detail) of one clause."""
        rec = self.records.get(clause)
        if rec is None:
            if clause in variants.RESIDUAL_CLAUSES.values() and clause != variants.residual_clause(self.variant):
                other = next(v for v, c in variants.RESIDUAL_CLAUSES.items() if c == clause)
                return "not run", f"(variant) judged under --variant {other}; this run judges {self.variant}"
            if clause in self.unavailable:
                return "not run", self.unavailable[clause]
            left_out = dtypes_judged(clause) - self.dtypes
            if left_out and not dtypes_judged(clause) & self.dtypes:
                return "not run", f"(dtypes) judges {','.join(sorted(left_out))}, not selected by --dtypes"
            return "not run", ""
        if rec.failed:
            nodeid, message = rec.failed[0]
            more = f" (+{len(rec.failed) - 1} more)" if len(rec.failed) > 1 else ""
            return "FAIL", f"{nodeid}{more}: {message}"
        if rec.deviations:
            return "deviation", "; ".join(rec.deviations)
        if rec.xfailed and not rec.passed - len(rec.xpassed):
            return "xfail", f"{rec.xfailed} accepted failure(s) (--xfails-file)"
        if rec.not_reached and not rec.passed:
            return "not reached", rec.not_reached[0][len(NOT_REACHED):].strip()
        if rec.passed:
            xpass = (f"; {len(rec.xpassed)} accepted failure(s) now pass (XPASS: drop {rec.xpassed[0]}"
                     + (" and the others" if len(rec.xpassed) > 1 else "") + " from --xfails-file)") if rec.xpassed else ""
            return "pass", f"{rec.passed} test(s)" + (f", {rec.skipped} skipped" if rec.skipped else "") + xpass
        return "skipped", f"{rec.skipped} test(s) skipped"

    def rows(self) -> list[dict[str, Any]]:
        return [{"clause": c.id, "tier": c.tier, "status": s, "detail": d}
                for c in CLAUSES.values() if c.tier != KIT for s, d in [self.status(c.id)]]

    def to_json(self) -> dict[str, Any]:
        return {"impl": self.impl, "variant": self.variant, "clauses": self.rows()}

    def write(self, path: str | Path, **extra: Any) -> None:
        Path(path).write_text(json.dumps({**self.to_json(), **extra}, indent=1) + "\n")

    def lines(self, width: int = 150) -> list[str]:
        rows = self.rows()
        counts = {s: sum(r["status"] == s for r in rows) for s in ORDER}
        head = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        out = [f"conformance card for {self.impl} (variant {self.variant}): {head}"]
        for r in rows:
            text = f"  {r['status']:<11} {r['clause']:<26} {r['tier']:<8} {r['detail']}"
            # a FAIL line is never cut: its message is what the reader came for (a one-line message, <= 320 chars)
            out.append(text if len(text) <= width or r["status"] == "FAIL" else text[: width - 3] + "...")
        return out


def one_line(longrepr: Any, limit: int = 320) -> str:
    """The first informative line of a failure's report (the exception line, else the first line)."""
    text = str(getattr(longrepr, "reprcrash", None) and longrepr.reprcrash.message or longrepr or "")
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."
