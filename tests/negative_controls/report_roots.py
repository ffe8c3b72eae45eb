"""The equivalence report's card on every negative control: its roots against the control's clauses (issue 31).

``python -m tests.negative_controls.report_roots [--out FILE]`` runs ``reference.report``'s sweep (every component,
CPU, float64, seed 0) on each control and writes, per control, the roots of its card (``reference.kit.verdict``),
the number of FAIL rows and ``kill_matrix.roots_verdict`` ("ok": roots non-empty and within its clauses, one per
bug for a double-bug control). The report judges float64 equivalence in eval mode only: controls whose bug lies
elsewhere (dropout, 16-bit, structure, state) have no FAIL there, or none within their clauses. ~3 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reference.kit import verdict
from reference.report.sweep import select_components, sweep
from tests.negative_controls import control_names
from tests.negative_controls.kill_matrix import roots_verdict

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "measurements" / "report-roots.json"


def report_roots(name: str) -> dict:
    """The report card's roots for control ``name``."""
    rep = sweep(f"tests.negative_controls.{name}", components=select_components(None), devices=["cpu"],
                dtypes={"cpu": ["float64"]}, seed=0)
    follows = verdict.follows(rep.card())
    roots = [c for c, r in follows.items() if not r]
    return {"roots": roots, "fail_rows": len(follows), "verdict": roots_verdict(name, roots) if roots else "no FAIL"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    out = {}
    for name in control_names():
        try:
            out[name] = report_roots(name)
        except Exception as exc:  # noqa: BLE001 (a control the report cannot run is a row of the table)
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(name, out[name], flush=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    failing = [v for v in out.values() if v.get("roots")]
    ok = sum(v.get("verdict") == "ok" for v in failing)
    print(f"{len(failing)} controls with a FAIL on the report's card, {ok} with roots within their clauses")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
