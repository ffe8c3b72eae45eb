"""The contract's clauses, each with a short id, and the two tiers tests are judged in.

* **contract** clauses restate the README's contract: every correct implementation passes their tests, however it
  is written (the positive controls in ``tests/positive_controls`` prove it). A conformance test names the clause(s)
  it checks with ``@pytest.mark.clause("id", ...)``.
* **strict** clauses are this package's own choices beyond the contract (zeros on fully masked rows, the table
  rebuilt on a dtype change, the bad-input errors, one compiled graph). Their tests carry
  ``@pytest.mark.strict`` too; they always run for ``scratch_transformer`` and, for any other ``--impl``, are
  skipped as "beyond the contract" unless ``--strict`` is given.
* **extra** clauses are the optional extras of the contract (``device=``/``dtype=`` keywords, mask helpers,
  ``Transformer.forward``): an implementation without one skips its tests with a reason naming it.
* **kit** is not a clause of the implementation: tests of the suite's own machinery (oracles, adapters, report,
  localiser, controls) that happen to run on the implementation under test.

``python -m reference.spec.clauses --write`` regenerates docs/clauses.md's clause table (clause, tier, what, number
of tests; the tests themselves in a collapsed list) from the markers, and its dtype table from ``clauses.toml``;
``tests/test_clauses.py`` fails when a test names no clause or an unknown one, when a strict test and its clauses
disagree, when a clause has no test, or when either table is stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reference.spec import tomlfile

CONTRACT, STRICT, EXTRA, KIT = "contract", "strict", "extra", "kit"


@dataclass(frozen=True)
class Clause:
    id: str
    tier: str
    text: str


_TABLE = tomlfile.load(Path(__file__).with_name("clauses.toml"))
_DTYPES = _TABLE.pop("dtypes")
_GIVEN = _TABLE.pop("given")
#: The clause table (``clauses.toml``: one TOML table per tier, ``id = "text"``, in the README's order).
_CLAUSES = [Clause(cid, tier, text) for tier, entries in _TABLE.items() for cid, text in entries.items()]

CLAUSES: dict[str, Clause] = {c.id: c for c in _CLAUSES}

#: The dtypes the kit can judge, in order: ``--dtypes`` takes a comma-separated subset (``tf32``: float32 storage
#: with TF32 matmuls, CUDA only; ``autocast``: float32 modules under ``torch.autocast``).
DTYPES = ("float64", "float32", "tf32", "bfloat16", "float16", "autocast")
SIXTEEN_BIT = ("float16", "bfloat16")


def _given() -> dict[str, tuple[str, ...]]:
    """``clauses.toml``'s ``[given]``, with ``@formula`` expanded to every contract clause of the formula families."""
    formula = tuple(c.id for c in _CLAUSES if c.tier == CONTRACT
                    and c.id.split(".", 1)[0] in _DTYPES["formula-families"] and c.id != "model.learns")
    out: dict[str, tuple[str, ...]] = {}
    for cid, names in _GIVEN.items():
        expanded = [n for name in names for n in (formula if name == "@formula" else (name,))]
        unknown = [n for n in [cid, *expanded] if n not in CLAUSES]
        if unknown:
            raise ValueError(f"clauses.toml [given]: unknown clause id(s) {unknown} in the entry of {cid!r}")
        out[cid] = tuple(dict.fromkeys(n for n in expanded if n != cid))
    return out


#: What each clause's non-own evidence relies on (``clauses.toml`` ``[given]``; ``reference.kit.verdict``).
GIVEN: dict[str, tuple[str, ...]] = _given()


def dtypes_judged(clause_id: str) -> frozenset[str]:
    """The dtypes whose cases count for a clause (``clauses.toml``'s ``[dtypes]``): its own list, float64/float32
    for a formula, masking or behaviour clause, every dtype for the rest."""
    own = _DTYPES["clauses"].get(clause_id)
    if own is not None:
        return frozenset(own)
    if clause_id.split(".", 1)[0] in _DTYPES["formula-families"]:
        return frozenset(_DTYPES["formula"])
    return frozenset(DTYPES)


def judged_in(clause_ids: "tuple[str, ...] | list[str]", case_dtypes: "set[str] | frozenset[str]") -> tuple[str, ...]:
    """The clauses a test case counts for: those of ``clause_ids`` that judge one of the case's dtypes (all of them
    for a case of no dtype)."""
    if not case_dtypes:
        return tuple(clause_ids)
    return tuple(c for c in clause_ids if c == KIT or c.startswith("@") or dtypes_judged(c) & set(case_dtypes))


def dtype_table() -> str:
    """Markdown: which clauses judge the cases of each dtype (docs/clauses.md, between its dtype-table markers)."""
    families = ", ".join(f"`{f}.*`" for f in _DTYPES["formula-families"])
    every = frozenset(DTYPES)
    rows = ["| dtype | its cases count for |", "|---|---|"]
    groups: dict[tuple[str, ...], list[str]] = {}
    for d in DTYPES:
        own = tuple(c.id for c in _CLAUSES if c.id in _DTYPES["clauses"] and d in dtypes_judged(c.id)
                    and dtypes_judged(c.id) != every)
        groups.setdefault(own, []).append(d)
    for own, names in groups.items():
        formula = all(n in _DTYPES["formula"] for n in names)
        text = (f"the formula, masking and behaviour clauses ({families}), " if formula else "") + ", ".join(
            f"`{c}`" for c in own)
        rows.append(f"| {', '.join(names)} | {text} |")
    rows.append("| any | the API, structure, state, extra and strict clauses (`api.*`, `build.*`, `module.*`, "
                "`pe.buffer`, `extra.*`, `strict.*`) |")
    return "\n".join(rows)


def tier(clause_id: str) -> str:
    """The tier of a clause id (``KeyError`` for an unknown id)."""
    return CLAUSES[clause_id].tier


def clause_table(by_clause: dict[str, list[str]]) -> str:
    """docs/clauses.md's clause table: one row per clause (id, tier, what it says, how many tests check it), then
    the tests of each clause in a collapsed ``<details>`` list."""
    lines = ["| clause | tier | what | tests |", "|---|---|---|---|"]
    for clause in _CLAUSES:
        lines.append(f"| `{clause.id}` | {clause.tier} | {clause.text} | {len(by_clause.get(clause.id, []))} |")
    lines += ["", "<details><summary>The tests of each clause</summary>", ""]
    for clause in _CLAUSES:
        tests = by_clause.get(clause.id, [])
        lines.append(f"* `{clause.id}` ({len(tests)}): " + (", ".join(f"`{t}`" for t in tests) if tests else "—"))
    lines += ["", "</details>"]
    return "\n".join(lines)


#: The generated file: the clause and dtype tables, between their markers (``--write`` rewrites them).
DOC = "docs/clauses.md"
TABLE_START, TABLE_END = "<!-- clause-table:start -->", "<!-- clause-table:end -->"
DTYPE_START, DTYPE_END = "<!-- dtype-table:start -->", "<!-- dtype-table:end -->"


def dtype_block() -> str:
    """docs/clauses.md's generated dtype table, between its markers."""
    return f"{DTYPE_START}\n{dtype_table()}\n{DTYPE_END}"


def collect(root: str = ".") -> dict[str, list[str]]:
    """Collect the suite (``pytest --collect-only`` in a subprocess) and return, per test function
    (``module::name``), its clause ids and whether it carries the ``strict`` marker (as the id ``@strict``)."""
    import json
    import subprocess
    import sys

    # The suite's plugin (tests/plugin.py) builds the clause map while it collects (tests.COLLECTED_CLAUSES); this
    # only reads it.
    code = ("import json, pytest\n"
            "from tests import COLLECTED_CLAUSES\n"
            "class P:\n"
            "    def pytest_collection_finish(self, session): self.out = session.config.stash[COLLECTED_CLAUSES]\n"
            "p = P()\n"
            "pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', '--device', 'all'], plugins=[p])\n"
            "print('@@' + json.dumps(p.out))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env=env).stdout
    return json.loads(out.split("@@", 1)[1])


def tests_by_clause(tests: dict[str, list[str]]) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for test, ids in sorted(tests.items()):
        for c in ids:
            if not c.startswith("@"):
                by.setdefault(c, []).append(test)
    return by


def clause_block(tests: dict[str, list[str]]) -> str:
    """docs/clauses.md's generated clause table, between its markers."""
    return f"{TABLE_START}\n{clause_table(tests_by_clause(tests))}\n{TABLE_END}"


def main(argv: list[str] | None = None) -> int:
    """``python -m reference.spec.clauses [--write]``: print the clause table, or rewrite docs/clauses.md's clause
    and dtype tables in place (run from the repository's root)."""
    import re
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    block = clause_block(collect())
    if "--write" in args:
        path = Path(DOC)
        text = path.read_text()
        for start, end, body in ((TABLE_START, TABLE_END, block), (DTYPE_START, DTYPE_END, dtype_block())):
            pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
            if not pattern.search(text):
                raise SystemExit(f"{DOC} has no {start} ... {end} block")
            text = pattern.sub(lambda _: body, text)
        path.write_text(text)
        print(f"wrote the clause and dtype tables of {DOC}")
    else:
        print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
