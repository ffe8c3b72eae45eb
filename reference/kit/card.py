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
from typing import Any, Iterable, Mapping, Sequence

from reference.judge.mistakes import BEHAVES_LIKE
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
    #: Outcomes of the tests that judge this clause on its own evidence (``@pytest.mark.own_evidence``).
    own_seen: int = 0
    own_passed: int = 0
    #: node id of each failed own-evidence test -> the clauses it still relies on (``own_evidence(given=...)``)
    own_failed: dict[str, tuple[str, ...]] = field(default_factory=dict)


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

    def add(self, clauses: Iterable[str], nodeid: str, outcome: str, message: str = "",
            own: Mapping[str, Sequence[str]] | Iterable[str] = ()) -> None:
        """One test's outcome ("passed", "failed", "xfailed", "xpassed", "skipped") against each clause it names;
        ``own``: those of them it judges on their own evidence, each with the clauses its evidence still relies on
        (a mapping; a plain list relies on none). ``reference.kit.verdict`` reads them."""
        own = dict(own) if isinstance(own, Mapping) else {c: () for c in own}
        for c in clauses:
            rec = self.records.setdefault(c, ClauseRecord())
            if c in own:
                rec.own_seen += 1
                rec.own_passed += outcome in ("passed", "xpassed")
                if outcome == "failed":
                    rec.own_failed[nodeid] = tuple(own[c])
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
            # the first failure, unless a later one names the known mistake it behaves like (the reader's shortcut)
            nodeid, message = next((f for f in rec.failed if BEHAVES_LIKE in f[1]), rec.failed[0])
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

    def rows(self, follows: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        """The card's rows in the README's order; with ``follows`` (``reference.kit.verdict.follows``) each FAIL row
        gets ``follows_from``: the root clauses it follows from, empty for a root."""
        rows = [{"clause": c.id, "tier": c.tier, "status": s, "detail": d}
                for c in CLAUSES.values() if c.tier != KIT for s, d in [self.status(c.id)]]
        if follows is not None:
            for r in rows:
                if r["status"] == "FAIL":
                    r["follows_from"] = list(follows.get(r["clause"], ()))
        return rows

    def to_json(self, follows: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        return {"impl": self.impl, "variant": self.variant, "clauses": self.rows(follows)}

    def write(self, path: str | Path, follows: Mapping[str, Sequence[str]] | None = None, **extra: Any) -> None:
        Path(path).write_text(json.dumps({**self.to_json(follows), **extra}, indent=1) + "\n")

    def lines(self, width: int = 150, follows: Mapping[str, Sequence[str]] | None = None,
              notes: Mapping[str, str] | None = None) -> list[str]:
        """The card as text: the summary line (root FAILs first, then those following from them), the root FAILs,
        the FAILs that follow (each naming its roots), then every other clause in the README's order."""
        rows = self.rows(follows)
        following = [r for r in rows if r.get("follows_from")]
        counts = {s: sum(r["status"] == s for r in rows) for s in ORDER}
        counts["FAIL"] -= len(following)
        parts = [f"{n} {s}" for s, n in counts.items() if n]
        if following:
            them = "it" if counts["FAIL"] == 1 else "them"
            parts.insert(1 if counts["FAIL"] else 0, f"{len(following)} following from {them}")
        out = [f"conformance card for {self.impl} (variant {self.variant}): {', '.join(parts)}"]
        rank = {id(r): (0 if r["status"] == "FAIL" and not r.get("follows_from") else
                        1 if r.get("follows_from") else 2) for r in rows}
        for r in sorted(rows, key=lambda r: rank[id(r)]):  # stable: the README's order within each group
            detail = r["detail"]
            if r.get("follows_from"):
                note = f" ({notes[r['clause']]})" if notes and r["clause"] in notes else ""
                detail = f"follows from {', '.join(r['follows_from'])}{note}: {detail}"
            text = f"  {r['status']:<11} {r['clause']:<26} {r['tier']:<8} {detail}"
            # a FAIL line is never cut: its message is what the reader came for (a one-line message, <= 320 chars)
            out.append(text if len(text) <= width or r["status"] == "FAIL" else text[: width - 3] + "...")
        return out


def one_line(longrepr: Any, limit: int = 320) -> str:
    """The first informative line of a failure's report (the exception line, else the first line)."""
    text = str(getattr(longrepr, "reprcrash", None) and longrepr.reprcrash.message or longrepr or "")
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."
