"""Wall time of the suite's own commands on this machine: ``python -m benchmarks.suite_times``.

Times, each in a fresh process with ``CI=true`` (the ``ci`` profile) and nothing else running:

* ``smoke``: ``python -m pytest -m smoke`` (goal <= 30 s, collection included);
* ``not slow``: ``python -m pytest -n 2 -m "not slow"`` (goal <= 60 s);
* ``ci test step``: ``python -m pytest -n 2``, the test step of ``.ci/run``, slow tier included, with an empty
  inductor cache as on a fresh CI machine (goal <= 150 s).

    python -m benchmarks.suite_times [--only smoke,not-slow,ci] [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "smoke": (["-m", "pytest", "-m", "smoke", "-q", "-p", "no:cacheprovider"], 30.0),
    "not-slow": (["-m", "pytest", "-n", "2", "-m", "not slow", "-q", "-p", "no:cacheprovider"], 60.0),
    "ci": (["-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider"], 150.0),
}


def time_pytest(args: list[str], env: dict[str, str]) -> dict:
    """Run ``python ARGS`` (a pytest command) in a fresh process at the repository root: its exit status, wall
    time, the outcome counts of pytest's last line, and that line."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", last)}
    return {"exit": proc.returncode, "wall_s": round(wall, 1), **counts, "summary": last}


def run(name: str) -> dict:
    args, goal = COMMANDS[name]
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
        timed = time_pytest(args, {**os.environ, "CI": "true", "TORCHINDUCTOR_CACHE_DIR": cache})
    return {"command": name, "argv": " ".join(["python", *args]), "goal_s": goal, **timed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(COMMANDS), help="comma list of " + ", ".join(COMMANDS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    console = Console()
    results = []
    for _ in range(args.repeat):
        for name in args.only.split(","):
            results.append(run(name))
            console.log(results[-1])
    table = Table("command", "exit", "passed", "skipped", "deselected", "wall s", "goal s")
    for r in results:
        table.add_row(r["argv"], str(r["exit"]), str(r.get("passed", 0)), str(r.get("skipped", 0)),
                      str(r.get("deselected", 0)), f"{r['wall_s']:.1f}", f"{r['goal_s']:.0f}")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
