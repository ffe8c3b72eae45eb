"""The kill matrix: which test catches which negative control. ``python -m tests.negative_controls.kill_matrix``.

Runs the property suite (every ``tests/test_*.py`` but this package's meta-test and the conformance meta-test,
``CI=true``, ``--device cpu``, Hypothesis without shrinking) once against the correct implementation and once
against every control, each in its own process (``--jobs`` at a time, within ``--budget`` seconds). A test *kills* a
control when it fails on the control and passes on the correct implementation; setup/collection errors never count.
Writes ``docs/kill-matrix.md`` (control x test module, and the tests that caught each control) and
``tests/negative_controls/expected_kills.json`` (what ``tests/test_negative_controls.py`` re-checks in CI). A control
that no test kills is a hole in the suite: the command exits 1 and the document lists it.

Options: ``--controls a,b`` / ``--modules tests/test_x.py ...`` run a subset (printed, never written);
``--jobs N`` (default 2); ``--budget S`` (default 3600); ``--timeout S`` per run (default 1200); ``--no-write``;
``--max-examples N`` (default: the ``ci`` profile's 20): fewer examples, a faster matrix, possibly fewer kills
(recorded in the JSON, and used by the CI re-check so every recorded kill reproduces). Each run's raw result is
cached (``--cache DIR``, default ``$TMPDIR/scratch-transformer-kill-matrix``) under a hash of every source file it
depends on, so an interrupted or budget-limited run resumes where it stopped; ``--no-cache`` reruns everything.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tests.negative_controls import EXPECTED_KILLS, control_names, dotted, load_control

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "kill-matrix.md"
BASELINE = "scratch_transformer"
COMMAND = "python -m tests.negative_controls.kill_matrix"
#: Meta-tests that judge the suite itself rather than an implementation: not part of the matrix.
EXCLUDED_MODULES = ("tests/test_negative_controls.py", "tests/test_conformance.py")
PYTEST_ARGS = ("--device", "cpu", "-q")
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "scratch-transformer-kill-matrix"
#: Sources every run depends on besides the test modules and the control itself.
SHARED_SOURCES = ("conftest.py", "pyproject.toml", "scratch_transformer/*.py", "reference/*.py", "tests/strategies.py",
                  "tests/conformance/*.py", "tests/negative_controls/__init__.py", "tests/negative_controls/_*.py")


def suite_modules() -> list[str]:
    """Every test module of the suite, as paths relative to the repository root."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if str(p.relative_to(ROOT)) not in EXCLUDED_MODULES)


def child_env() -> dict[str, str]:
    """Environment of a run: the deterministic ``ci`` Hypothesis profile, the repository importable."""
    env = {**os.environ, "CI": "true", "HYPOTHESIS_PROFILE": "ci"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return env


def run_impls(entries: list[dict[str, Any]], *, timeout: float) -> list[dict[str, Any]]:
    """Run ``_run`` in a fresh process over ``entries`` ([{"impl", "args"}]); one result per entry.

    An entry the process did not finish (timeout, crash) gets ``exit`` -1 and the process's output tail.
    """
    with tempfile.TemporaryDirectory(prefix="kill-matrix-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps(entries))
        tail = ""
        try:
            proc = subprocess.run([sys.executable, "-m", "tests.negative_controls._run", str(spec), str(out)],
                                  cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)
            tail = (proc.stdout + proc.stderr)[-3000:]
        except subprocess.TimeoutExpired as exc:
            tail = f"timed out after {timeout:.0f} s\n" + str(exc.stdout or "")[-2000:]
        results = json.loads(out.read_text()) if out.exists() else []
    for entry in entries[len(results):]:
        results.append({"impl": entry["impl"], "exit": -1, "wall": 0.0, "outcomes": {}, "collect_errors": {},
                        "output": tail})
    return results


def fingerprint(name: str, modules: list[str], max_examples: int | None) -> str:
    """Hash of everything a run's outcome depends on: sources, the control, the modules, versions, examples."""
    import hypothesis
    import torch

    files = {p for pattern in SHARED_SOURCES for p in ROOT.glob(pattern)} | {ROOT / m for m in modules}
    if name != BASELINE:
        files.add(ROOT / "tests" / "negative_controls" / f"{name}.py")
    digest = hashlib.sha256(json.dumps([name, modules, max_examples, torch.__version__,
                                        hypothesis.__version__]).encode())
    for path in sorted(files):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
    return digest.hexdigest()[:20]


def kills(control: dict[str, Any], baseline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Tests that fail on the control and pass on the baseline: {nodeid: outcome record}."""
    base = baseline["outcomes"]
    return {nodeid: rec for nodeid, rec in control["outcomes"].items()
            if rec["outcome"] == "failed" and base.get(nodeid, {}).get("outcome") == "passed"}


def short(module: str) -> str:
    return module.removeprefix("tests/test_").removesuffix(".py")


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def build_report(modules: list[str], names: list[str], results: dict[str, dict[str, Any]], wall: float,
                 max_examples: int | None = None) -> tuple[str, dict[str, Any]]:
    """The Markdown document and the expected-kills record."""
    import torch

    baseline = results[BASELINE]
    base_out = baseline["outcomes"]
    counts = {k: sum(1 for r in base_out.values() if r["outcome"] == k) for k in ("passed", "failed", "error",
                                                                                  "skipped")}
    record: dict[str, Any] = {"command": COMMAND, "generated": _dt.date.today().isoformat(),
                              "torch": torch.__version__, "max_examples": max_examples, "modules": modules,
                              "controls": {}}
    holes, not_run, rows, details, errors = [], [], [], [], []
    for name in names:
        module = load_control(name)
        result = results.get(name)
        if result is None or result["exit"] == -1:
            not_run.append(name)
            why = "not run (budget)" if result is None else "did not finish: " + result.get("output", "")[-200:]
            errors.append(f"- `{name}`: {why}")
            continue
        killed = kills(result, baseline)
        record["controls"][name] = {
            "bug": module.BUG, "component": module.COMPONENT,
            "kills": {nodeid: [rec["exception"], rec["duration"]] for nodeid, rec in sorted(killed.items())}}
        per_module = {m: sum(1 for n in killed if module_of(n) == m) for m in modules}
        cells = [str(per_module[m]) if per_module[m] else "·" for m in modules]
        rows.append(f"| `{name}` | " + " | ".join(cells) + f" | **{len(killed)}** |")
        if not killed:
            holes.append(name)
        lines = [f"### `{name}` ({module.COMPONENT})", "", module.BUG + ".", ""]
        if killed:
            for nodeid, rec in sorted(killed.items()):
                lines.append(f"- `{nodeid}`: {rec['exception'] or 'failed'}")
        else:
            lines.append("- **HOLE: no test fails.**")
        details += lines + [""]
        bad = {n: r for n, r in result["outcomes"].items() if r["outcome"] == "error"}
        bad.update({n: {"message": m} for n, m in result["collect_errors"].items()})
        for nodeid, rec in sorted(bad.items()):
            errors.append(f"- `{name}`: `{nodeid}`: {rec['message']}")
    record["baseline"] = {"counts": counts,
                          "not_passing": sorted(n for n, r in base_out.items() if r["outcome"] in ("failed", "error"))}

    doc = [
        "# Kill matrix: which property catches which bug", "",
        f"Generated by `{COMMAND}{f' --max-examples {max_examples}' if max_examples else ''}` "
        f"({record['generated']}, torch {record['torch']}, the `ci` Hypothesis profile without shrinking"
        f"{f', {max_examples} examples per test' if max_examples else ''}, `--device cpu`; {wall:.0f} s wall). "
        "Do not edit by hand.", "",
        "Each **negative control** in `tests/negative_controls/` is the correct implementation with exactly one "
        "realistic bug (one patch to the shared base, `_base.install`), importable as "
        "`pytest --impl tests.negative_controls.<name>`. A test **kills** a control when it fails on the control "
        "and passes on `scratch_transformer`; setup and collection errors never count. A cell is the number of "
        "tests of that module that kill the control (`·`: none). A control that nothing kills is a hole in the "
        "suite, to be closed with a new property, never by dropping the control. "
        "`tests/test_negative_controls.py` re-checks every control in CI against the fastest of the tests listed "
        "here (recorded in `tests/negative_controls/expected_kills.json`).", "",
        f"**{len(names)} controls; {len(names) - len(holes) - len(not_run)} caught, {len(holes)} holes"
        + (f", {len(not_run)} not run" if not_run else "") + ".** "
        f"Correct implementation: {counts['passed']} passed, {counts['skipped']} skipped, "
        f"{counts['failed']} failed, {counts['error']} errors.", "",
    ]
    if holes:
        doc += ["## Holes", ""] + [f"- `{n}`: {load_control(n).BUG}" for n in holes] + [""]
    doc += ["## Controls", "", "| control | component | bug | tests that kill it |", "|---|---|---|---|"]
    for name in names:
        module = load_control(name)
        n = len(record["controls"].get(name, {}).get("kills", {}))
        doc.append(f"| `{name}` | {module.COMPONENT} | {module.BUG} | {n if name not in not_run else 'not run'} |")
    doc += ["", "## Matrix (failing tests per control and module)", "",
            "| control | " + " | ".join(short(m) for m in modules) + " | total |",
            "|---" * (len(modules) + 2) + "|", *rows, "",
            "## Which tests caught each control", "", *details]
    if record["baseline"]["not_passing"]:
        doc += ["## Failing on the correct implementation (not counted as kills)", ""]
        doc += [f"- `{n}`: {base_out[n]['message']}" for n in record["baseline"]["not_passing"]] + [""]
    if errors:
        doc += ["## Errors, not kills (controls must import and construct cleanly)", "", *errors, ""]
    return "\n".join(doc).rstrip() + "\n", record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controls", help="comma-separated control names (default: all)")
    parser.add_argument("--modules", nargs="+", help="test modules (default: the whole suite)")
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (default 2)")
    parser.add_argument("--budget", type=float, default=3600.0, help="seconds; no run starts after (default 3600)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per run (default 1200)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--max-examples", type=int, help="Hypothesis examples per test (default: the ci profile's)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"result cache (default {DEFAULT_CACHE})")
    parser.add_argument("--no-cache", action="store_true", help="rerun everything")
    args = parser.parse_args(argv)

    all_names = control_names()
    names = args.controls.split(",") if args.controls else all_names
    unknown = sorted(set(names) - set(all_names))
    if unknown:
        parser.error(f"unknown controls: {', '.join(unknown)}")
    modules = args.modules or suite_modules()
    full = not args.controls and not args.modules
    console = Console(stderr=True)
    for name in names:  # import errors surface here, before any run
        load_control(name)

    jobs = [BASELINE, *names]
    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        task = progress.add_task("kill matrix", total=len(jobs))
        pending: dict[Future, str] = {}
        queue = list(jobs)
        args.cache.mkdir(parents=True, exist_ok=True)
        keys = {name: args.cache / f"{name}-{fingerprint(name, modules, args.max_examples)}.json" for name in jobs}
        for name in list(queue):
            if keys[name].exists() and not args.no_cache:
                results[name] = json.loads(keys[name].read_text())
                queue.remove(name)
                progress.console.log(f"{name}: cached ({keys[name].name})")
                progress.advance(task)
        while queue or pending:
            while queue and len(pending) < max(1, args.jobs) and time.perf_counter() - start < args.budget:
                name = queue.pop(0)
                impl = BASELINE if name == BASELINE else dotted(name)
                entry = {"impl": impl, "args": [*modules, *PYTEST_ARGS], "max_examples": args.max_examples}
                pending[pool.submit(run_impls, [entry], timeout=args.timeout)] = name
            if not pending:
                break  # budget spent
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name = pending.pop(future)
                result = results[name] = future.result()[0]
                if result["exit"] != -1:
                    keys[name].write_text(json.dumps(result))
                failed = sum(1 for r in result["outcomes"].values() if r["outcome"] == "failed")
                status = "[red]did not finish[/]" if result["exit"] == -1 else f"{failed} failing"
                progress.console.log(f"{name}: {status} ({result['wall']:.0f} s)")
                progress.advance(task)
        if queue:
            console.log(f"[yellow]budget of {args.budget:.0f} s spent: {len(queue)} runs not started")
    wall = time.perf_counter() - start
    if BASELINE not in results:
        console.log("[red]the correct implementation was not run")
        return 2

    doc, record = build_report(modules, names, results, wall, args.max_examples)
    table = Table("control", "kills", "modules")
    for name in names:
        killed = record["controls"].get(name, {}).get("kills", {})
        table.add_row(name, str(len(killed)) if name in record["controls"] else "not run",
                      ", ".join(sorted({short(module_of(n)) for n in killed})))
    console.print(table)
    if full and not args.no_write:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(doc)
        EXPECTED_KILLS.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        console.log(f"wrote {DOC.relative_to(ROOT)} and {EXPECTED_KILLS.relative_to(ROOT)}")
    uncaught = [n for n in names if not record["controls"].get(n, {}).get("kills")]
    if uncaught:
        console.log(f"[red]not caught: {', '.join(uncaught)}")
    return 1 if uncaught else 0


if __name__ == "__main__":
    raise SystemExit(main())
