"""How long the suite takes on a broken implementation, against a green run: ``python -m benchmarks.failing_runs``.

Runs the README's fast command, ``python -m pytest -n 2 -m "not slow"``, once per implementation, in a fresh
process each, as a user would (``--impl``; ``CI=true`` for the ``ci`` profile, or ``--profile dev``), and records
the wall time and the outcome counts. The goal (issue 14): a run on a broken model takes at most 2x the green run.
Run it on a quiet machine: the timings are wall clock.

    python -m benchmarks.failing_runs [--impls a,b,...] [--profile ci|dev] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.suite_times import ROOT, time_pytest

#: The green runs (this package, and a correct implementation written differently) and the broken ones: three
#: negative controls of different components and the blog-like combination.
DEFAULT_IMPLS = ("scratch_transformer", "tests.positive_controls.independent",
                 "tests.negative_controls.attn_no_scale", "tests.negative_controls.residual_post_norm",
                 "tests.negative_controls.pe_sin_cos_swapped", "benchmarks.impls.blog_like")
COMMAND = ("-m", "pytest", "-n", "2", "-m", "not slow", "-q", "-p", "no:cacheprovider")


def run(impl: str, profile: str) -> dict:
    env = {**os.environ, "CI": "true" if profile == "ci" else "", "HYPOTHESIS_PROFILE": profile}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return {"impl": impl, "profile": profile, **time_pytest([*COMMAND, "--impl", impl], env)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", default=",".join(DEFAULT_IMPLS), help="comma-separated --impl names")
    parser.add_argument("--profile", default="ci", choices=("ci", "dev"))
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    console = Console()
    results = []
    for impl in args.impls.split(","):
        results.append(run(impl, args.profile))
        console.log(results[-1]["impl"], results[-1]["wall_s"], "s:", results[-1]["summary"])
    green = results[0]["wall_s"]
    table = Table("impl", "exit", "passed", "failed", "skipped", "wall s", "x first row")
    for r in results:
        table.add_row(r["impl"], str(r["exit"]), str(r.get("passed", 0)), str(r.get("failed", 0)),
                      str(r.get("skipped", 0)), f"{r['wall_s']:.1f}", f"{r['wall_s'] / green:.2f}")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"profile": args.profile, "command": " ".join(["python", *COMMAND]),
                                         "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
