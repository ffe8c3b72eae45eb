"""``python -m tests.faults.table [--markdown] [CASE ...]``: run the fault cases one after another (each in its own
process, killed at its timeout) and print what the kit did: case, command, exit status expected/got, first message.

The cases and the first-message rule are in ``tests/faults/cases.py``. ``--markdown`` prints a Markdown table (with
the commit it ran on), as saved in ``docs/measurements/faults-before-issue-32.md``. Exit status 0 whatever the
verdicts: this measures, ``tests/test_faults.py`` judges.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

from tests.faults.cases import BY_ID, CASES, ROOT, Case, Outcome, run

#: Messages are cut to this many characters in the table.
WIDTH = 110


def _cut(text: str, width: int = WIDTH) -> str:
    """``text`` with each run of blanks made one (the card's columns are padded), cut to ``width``."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def row(case: Case, outcome: Outcome) -> tuple[str, str, str, str, str]:
    """(case, command, expected, got, first message) of one run; ``got`` marks a miss with ``!``: an exit status
    not the target, or a first message that does not match the case's regex (``tests/test_faults.py``'s two
    assertions)."""
    message = outcome.message(case.kind)
    hit = outcome.exit == case.expected_exit and re.search(case.message, message) is not None
    got = f"{outcome.exit}" + ("" if hit else " !")
    return case.id, case.shown(), str(case.expected_exit), got, _cut(message)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults.table", description=__doc__.split("\n\n")[0])
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("cases", nargs="*", metavar="CASE", help=f"case ids (default: all {len(CASES)})")
    args = p.parse_args(argv)
    unknown = [c for c in args.cases if c not in BY_ID]
    if unknown:
        p.error(f"unknown case(s) {unknown}; known: {', '.join(BY_ID)}")
    cases = [BY_ID[c] for c in args.cases] if args.cases else list(CASES)
    commit = _commit()
    if args.markdown:
        print(f"Measured on commit {commit}, {len(cases)} case(s), `CI=true`, each case in its own process "
              f"(`python -m tests.faults.table --markdown`). `!`: the exit status is not the target, or the first message does not match the case's.\n")
        print("| case | command | exit expected | exit got | wall s | first message |")
        print("|---|---|---|---|---:|---|")
    else:
        print(f"commit {commit}")
    misses = 0
    for case in cases:
        outcome = run(case)
        cells = row(case, outcome)
        misses += cells[3].endswith("!")
        if args.markdown:
            name, command, expected, got, message = cells
            print(f"| {name} | `{_cell(command)}` | {expected} | {got} | {outcome.wall_s:.0f} | `{_cell(message)}` |",
                  flush=True)
        else:
            name, command, expected, got, message = cells
            print(f"{name}  ({outcome.wall_s:.1f} s)\n  {command}\n  exit expected {expected}, got {got}\n"
                  f"  {message}", flush=True)
    print(f"\n{len(cases) - misses} of {len(cases)} case(s) get their target verdict (exit status and first message).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
