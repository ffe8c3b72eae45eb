"""The kit on the field set, as a user runs it: ``python -m benchmarks.field_runs``.

For each learner-style file of ``tests/field/`` (through its own ``.map.toml``), times
``python -m pytest -n 2 -m "not slow" --impl tests.field.NAME --impl-map tests/field/NAME.map.toml`` in a fresh
process with ``CI=true``, and keeps its conformance card (goal: each run <= 5 minutes on the 2-core machine, no
internal error: pytest exits 0 or 1).

    python -m benchmarks.field_runs [--names a,b] [--json FILE] [--cards DIR] [--include-slow]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.suite_times import ROOT, time_pytest

FIELD = ROOT / "tests" / "field"
GOAL_S = 300.0


def run(name: str, cards: Path, include_slow: bool) -> dict:
    card = cards / f"{name}.json"
    args = ["-m", "pytest", "-n", "2", *([] if include_slow else ["-m", "not slow"]), "-q", "-p", "no:cacheprovider",
            "--impl", f"tests.field.{name}", "--impl-map", str(FIELD / f"{name}.map.toml"), "--card-json", str(card)]
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
        timed = time_pytest(args, {**os.environ, "CI": "true", "TORCHINDUCTOR_CACHE_DIR": cache})
    rows = json.loads(card.read_text())["clauses"] if card.exists() else []
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {"name": name, "argv": " ".join(["python", *args]), "goal_s": GOAL_S, **timed, "card": counts,
            "failing_clauses": [r["clause"] for r in rows if r["status"] == "FAIL"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default=",".join(sorted(json.loads((FIELD / "catalogue.json").read_text()))))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cards", type=Path, default=Path(tempfile.mkdtemp(prefix="field-cards-")))
    parser.add_argument("--include-slow", action="store_true")
    args = parser.parse_args(argv)
    args.cards.mkdir(parents=True, exist_ok=True)
    console = Console()
    results = []
    for name in args.names.split(","):
        results.append(run(name, args.cards, args.include_slow))
        console.log({k: v for k, v in results[-1].items() if k != "argv"})
    table = Table("file", "exit", "passed", "failed", "skipped", "wall s", "card")
    for r in results:
        table.add_row(r["name"], str(r["exit"]), str(r.get("passed", 0)), str(r.get("failed", 0)),
                      str(r.get("skipped", 0)), f"{r['wall_s']:.1f}",
                      ", ".join(f"{n} {s}" for s, n in r["card"].items()))
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["exit"] in (0, 1) and r["wall_s"] <= GOAL_S for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
