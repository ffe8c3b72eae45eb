"""The kill matrix: which test catches which negative control. ``python -m tests.negative_controls.kill_matrix``.

Runs the property suite (every ``tests/test_*.py`` but this package's meta-test and the conformance meta-test,
``CI=true``, ``--device cpu``, Hypothesis without shrinking) once against the correct implementation, then against
every control, each in its own process (``--jobs`` at a time, no new run after ``--budget`` seconds). A test *kills*
a control when it fails on the control and passes on the correct implementation; setup and collection errors never
count. Writes ``docs/kill-matrix.md`` (control x test module, and the tests that caught each control) and
``tests/negative_controls/expected_kills.json`` (what ``tests/test_negative_controls.py`` re-checks in CI). A
control that no test kills is a hole in the suite: the command exits 1 and the document lists it.

What runs: tests marked ``slow`` are left out unless ``--include-slow``. For a control, tests that request neither
the ``impl`` nor the ``impl_name`` fixture are left out (they cannot see the implementation), and so are tests that
fail on the correct implementation (they cannot kill). ``--max-examples N`` (default 5; the ``ci`` profile has 20)
trades kills for time; the number is recorded in the JSON and used by the CI re-check, so every recorded kill
reproduces exactly. ``--first-kill`` stops each control at its first kill, cheapest tests first: a fast check for
holes, but a partial matrix.

Options: ``--controls a,b`` / ``--modules tests/test_x.py ...`` run a subset (printed, never written); ``--jobs N``
(default 2); ``--budget S`` (default 7200); ``--timeout S`` per run (default 3600); ``--no-write``. Each run's raw
result is cached (``--cache DIR``, default ``$TMPDIR/scratch-transformer-kill-matrix``) under a hash of every
source file it depends on, so an interrupted or budget-limited run resumes where it stopped; ``--no-cache`` reruns
everything. All runs work in a snapshot of the tree taken at the start, so edits made meanwhile do not mix in.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import hashlib
import json
import os
import shutil
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

from tests import positive_controls
from tests.negative_controls import EXPECTED_KILLS, control_names, dotted, load_control
from tests.negative_controls._run import VERDICTS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "kill-matrix.md"
BASELINE = "scratch_transformer"
COMMAND = "python -m tests.negative_controls.kill_matrix"
#: Meta-tests that judge the suite itself rather than an implementation: not part of the matrix.
EXCLUDED_MODULES = ("tests/test_negative_controls.py", "tests/test_positive_controls.py", "tests/test_conformance.py",
                    "tests/test_field.py")
PYTEST_ARGS = ("--device", "cpu", "-q")
#: Deselected unless ``--include-slow``: the ``slow`` marker (inductor compilation, minutes per run).
NOT_SLOW = ("-m", "not slow")
#: Hypothesis examples per test in the matrix runs: a quarter of the ci profile's 20, for time (see the docstring).
DEFAULT_EXAMPLES = 5
#: Killing tests per control kept in the JSON (the cheapest), for the CI re-check; the document lists them all.
RECORDED_KILLS = 10
#: Modules that test the kit itself (oracles, adapters, report, localiser, strategies), not a property of the
#: implementation; every other module is a *property module*. Each control's cheapest kill in a property module is
#: recorded too, so the CI re-check runs a property, not only the fastest (often kit) test that trips over the bug.
KIT_MODULES = ("tests/test_clauses.py", "tests/test_localize.py", "tests/test_numpy_ref.py", "tests/test_registry.py",
               "tests/test_report.py", "tests/test_strategies.py", "tests/test_torch_adapters.py")

SNAPSHOT_IGNORE = (".git", ".venv", "venv", "__pycache__", ".hypothesis", ".pytest_cache", ".benchmarks", "*.egg-info",
                   "report-out", "plots", "build", "dist")
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "scratch-transformer-kill-matrix"
#: Sources every run depends on besides the test modules and the control itself.
SHARED_SOURCES = ("conftest.py", "tests/plugin.py", "pyproject.toml", "scratch_transformer/*.py", "reference/**/*.py",
                  "reference/**/*.toml", "tests/strategies.py", "tests/support.py", "tests/conformance/*.py",
                  "tests/negative_controls/__init__.py", "tests/negative_controls/_*.py",
                  "tests/positive_controls/__init__.py")
#: Prefix of a positive control's key in the run table (``+attn_sdpa``).
POSITIVE = "+"
#: The CI re-check of a positive control runs a recorded selection of at most this many seconds (by the matrix's
#: own timings): the cheapest tests of every module, then the tests that killed a negative control of the same
#: component (the ones a variant of that component is most likely to trip).
SELECTION_SECONDS = 6.0
#: A module's cheapest test joins the selection only if it takes at most this long: the one impl-reaching contract
#: test of `test_compile` (an aot_eager compilation, ~4 s) would otherwise be most of every control's re-check. The
#: kill matrix itself runs every test on every positive control.
SELECTION_TEST_CAP = 1.0
#: Seconds charged to every smoke test on top of its recorded duration (setup, reporting) in the set cover.
SMOKE_OVERHEAD = 0.02
#: Rounds of the smoke check: a control the chosen set fails to kill under the ``ci`` profile's own example count
#: gets its next-cheapest killing test added, and is checked again.
SMOKE_ROUNDS = 3


def smoke_cover(killed: dict[str, set[str]], cost: dict[str, float]) -> dict[str, list[str]]:
    """A small, fast set of tests that together kill every control: greedy weighted set cover over the recorded
    kills (``killed[test] = {controls}``), each step taking the test with the most not-yet-killed controls per
    second on the correct implementation (``cost``). Returns {test: [controls it is counted for]}."""
    left = set().union(*killed.values()) if killed else set()
    chosen: dict[str, list[str]] = {}
    while left:
        test = max(killed, key=lambda t: (len(killed[t] & left) / (cost[t] + SMOKE_OVERHEAD), -cost[t], t))
        gain = killed[test] & left
        if not gain:
            break
        chosen[test] = sorted(gain)
        left -= gain
    return chosen


#: A test joins the smoke tier's clause cover only if it takes at most this long on the correct implementation: the
#: tier judges every contract clause "that can be judged in seconds"; slower clauses are listed as not run.
CLAUSE_COVER_CAP = 1.0


def clause_cover(outcomes: dict[str, dict[str, Any]], chosen: set[str]) -> dict[str, list[str]]:
    """The smoke tier's clause cover (issue 31): for each contract clause no test of ``chosen`` (the controls' cover)
    or of the always-smoke tests (``tests.plugin.ALWAYS_SMOKE``, every own-evidence test) judges, the cheapest
    property test that passes on the correct implementation and names it, if one takes at most
    ``CLAUSE_COVER_CAP`` seconds. Returns {test: []} (counted for no control)."""
    from reference.spec import clauses as spec
    from tests.plugin import ALWAYS_SMOKE

    def smoke_anyway(nodeid: str, rec: dict[str, Any]) -> bool:
        return nodeid in chosen or nodeid.startswith(ALWAYS_SMOKE) or bool(rec.get("own"))

    passed = {n: r for n, r in outcomes.items() if r["outcome"] == "passed" and is_property_test(n)}
    covered = {c for n, r in passed.items() if smoke_anyway(n, r) for c in r.get("clauses", ())}
    picks: dict[str, list[str]] = {}
    for clause in (c for c in spec.CLAUSES.values() if c.tier == spec.CONTRACT):
        if clause.id in covered:
            continue
        fits = sorted((r["duration"], n) for n, r in passed.items() if clause.id in r.get("clauses", ())
                      and r["duration"] <= CLAUSE_COVER_CAP)
        if fits:
            test = fits[0][1]
            picks[test] = []
            covered.update(passed[test].get("clauses", ()))
    return picks


def tier(name: str) -> str:
    """``strict`` for a negative control whose bug breaks only a strict clause (run with ``--strict-tier``)."""
    return getattr(load_control(name), "TIER", "contract")


def impl_of(name: str) -> str:
    return positive_controls.dotted(name[1:]) if name.startswith(POSITIVE) else dotted(name)


def suite_modules() -> list[str]:
    """Every test module of the suite, as paths relative to the repository root."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if str(p.relative_to(ROOT)) not in EXCLUDED_MODULES)


def child_env(root: Path = ROOT) -> dict[str, str]:
    """Environment of a run: the deterministic ``ci`` Hypothesis profile, the tree at ``root`` importable first."""
    env = {**os.environ, "CI": "true", "HYPOTHESIS_PROFILE": "ci"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH", "")]))
    return env


def snapshot(directory: Path) -> Path:
    """Copy the working tree (sources only) to ``directory``: every run then sees the same files, even while
    someone edits the tree."""
    shutil.copytree(ROOT, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*SNAPSHOT_IGNORE))
    return directory


def run_impls(entries: list[dict[str, Any]], *, timeout: float, root: Path = ROOT) -> list[dict[str, Any]]:
    """Run ``_run`` in a fresh process in the tree at ``root`` over ``entries`` ([{"impl", "args"}]).

    An entry the process did not finish (timeout, crash) gets ``exit`` -1 and the process's output tail.
    """
    with tempfile.TemporaryDirectory(prefix="kill-matrix-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps(entries))
        tail = ""
        try:
            proc = subprocess.run([sys.executable, "-m", "tests.negative_controls._run", str(spec), str(out)],
                                  cwd=root, env=child_env(root), capture_output=True, text=True, timeout=timeout)
            tail = (proc.stdout + proc.stderr)[-3000:]
        except subprocess.TimeoutExpired as exc:
            tail = f"timed out after {timeout:.0f} s\n" + str(exc.stdout or "")[-2000:]
        results = json.loads(out.read_text()) if out.exists() else []
    for entry in entries[len(results):]:
        results.append({"impl": entry["impl"], "exit": -1, "wall": 0.0, "outcomes": {}, "collect_errors": {},
                        "output": tail})
    return results


def fingerprint(name: str, modules: list[str], mode: dict[str, Any], root: Path = ROOT) -> str:
    """Hash of everything a run's outcome depends on: sources, the control, the modules, versions, examples."""
    import hypothesis
    import torch

    files = {p for pattern in SHARED_SOURCES for p in root.glob(pattern)} | {root / m for m in modules}
    if name.startswith(POSITIVE):
        files.add(root / "tests" / "positive_controls" / f"{name[1:]}.py")
    elif name != BASELINE:
        files.add(root / "tests" / "negative_controls" / f"{name}.py")
    digest = hashlib.sha256(json.dumps([name, modules, mode if name != BASELINE else mode["max_examples"],
                                        mode["include_slow"], torch.__version__, hypothesis.__version__]).encode())
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
    return digest.hexdigest()[:20]


def failures(control: dict[str, Any], baseline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Tests that fail on the control and pass on the baseline: {nodeid: outcome record}."""
    base = baseline["outcomes"]
    return {nodeid: rec for nodeid, rec in control["outcomes"].items()
            if rec["outcome"] == "failed" and base.get(nodeid, {}).get("outcome") == "passed"}


def not_a_kill(rec: dict[str, Any], nodeid: str, clauses: tuple[str, ...]) -> str:
    """Why a failure of a test on a control is not a kill of it ("" when it is one). A kill is a verdict of the
    control's own clauses (issue 24): a property test (not a kit test), failing by an assertion or by the
    implementation raising (not a non-finite reference or a crash of the kit's code), that judges one of the
    clauses the control's bug breaks (its ``CLAUSES``), so the card shows that clause FAIL."""
    if not is_property_test(nodeid):
        return "kit test"
    if rec.get("origin") and rec["origin"] not in VERDICTS:
        return rec["origin"]
    if not set(rec.get("clauses", ())) & set(clauses):
        return "judges " + (", ".join(rec.get("clauses", ())) or "no clause") + ", not the control's clauses"
    return ""


def kills(control: dict[str, Any], baseline: dict[str, Any], clauses: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The failures of ``control`` that are kills by :func:`not_a_kill`: {nodeid: outcome record}."""
    return {n: r for n, r in failures(control, baseline).items() if not not_a_kill(r, n, clauses)}


def control_clauses(name: str) -> tuple[str, ...]:
    """The clauses a negative control's bug breaks (its ``CLAUSES``): the only ones whose failures kill it."""
    clauses = tuple(getattr(load_control(name), "CLAUSES", ()))
    if not clauses:
        raise SystemExit(f"negative control {name} names no CLAUSES (the clause ids its bug breaks)")
    return clauses


def _why(rec: dict[str, Any], width: int = 160) -> str:
    """One line: the exception type and the start of its message."""
    message = " ".join(rec.get("message", "").split()).replace("`", "'")
    exc = rec.get("exception") or "failed"
    if message.startswith(exc + ":"):
        message = message[len(exc) + 1:].strip()
    text = f"{exc}: {message}" if message else exc
    return text if len(text) <= width else text[: width - 3] + "..."


def short(module: str) -> str:
    return module.removeprefix("tests/test_").removesuffix(".py")


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def is_property_test(nodeid: str) -> bool:
    return module_of(nodeid) not in KIT_MODULES and module_of(nodeid) not in EXCLUDED_MODULES


def tier_args(name: str) -> list[str]:
    """Extra pytest arguments of a control's runs: ``--strict-tier`` for a strict negative control, ``--variant`` for
    a positive control that declares one (``positive_controls.variant_args``)."""
    if name.startswith(POSITIVE):  # a positive control that declares a variant runs under it
        return positive_controls.variant_args(name[len(POSITIVE):])
    return ["--strict-tier"] if tier(name) == "strict" else []


def kill_costs(record: dict[str, Any]) -> dict[str, float]:
    """Seconds each recorded killing test took on the correct implementation (``expected_kills.json``)."""
    return {n: c[2] for entry in record["controls"].values() for n, c in entry["kills"].items()}


def _selection(outcomes: dict[str, dict[str, Any]], controls: dict[str, Any], component: str,
               modules: list[str]) -> list[str]:
    """The CI re-check of a positive control: the cheapest passing test of every module, then the tests that killed
    a negative control of the same component, cheapest first, within ``SELECTION_SECONDS``."""
    passed = {n: r["duration"] for n, r in outcomes.items() if r["outcome"] == "passed"}
    chosen: list[str] = []
    for m in modules:
        ids = sorted((d, n) for n, d in passed.items() if module_of(n) == m and d <= SELECTION_TEST_CAP)
        chosen += [n for _, n in ids[:1]]
    word = component.split()[0]  # "attention" relates to "attention masking", "positional encoding" to "... table"
    related = {n for c in controls.values() if c["component"].split()[0] == word for n in c["kills"]}
    spent = sum(passed[n] for n in chosen)
    for d, n in sorted((passed[n], n) for n in related if n in passed and n not in chosen):
        if spent + d > SELECTION_SECONDS:
            break
        chosen.append(n)
        spent += d
    return sorted(chosen)


def build_report(modules: list[str], names: list[str], results: dict[str, dict[str, Any]], wall: float,
                 mode: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The Markdown document and the expected-kills record."""
    import torch

    baseline = results[BASELINE]
    base_out = baseline["outcomes"]
    counts = {k: sum(1 for r in base_out.values() if r["outcome"] == k) for k in ("passed", "failed", "error",
                                                                                  "skipped")}
    record: dict[str, Any] = {"command": COMMAND, "generated": _dt.date.today().isoformat(),
                              "torch": torch.__version__, **mode, "modules": modules,
                              "controls": {}}
    holes, not_run, rows, details, errors = [], [], [], [], []
    killers: dict[str, set[str]] = {}  # test -> controls it kills (all of them, not only the recorded ones)
    for name in names:
        module = load_control(name)
        result = results.get(name)
        if result is None or result["exit"] == -1:
            not_run.append(name)
            why = "not run (budget)" if result is None else "did not finish: " + result.get("output", "")[-200:]
            errors.append(f"- `{name}`: {why}")
            continue
        clauses = control_clauses(name)
        failed = failures(result, baseline)
        killed = kills(result, baseline, clauses)
        others = {n: not_a_kill(r, n, clauses) for n, r in failed.items() if n not in killed}
        for nodeid in killed:
            killers.setdefault(nodeid, set()).add(name)
        per_module = {m: sum(1 for n in killed if module_of(n) == m) for m in modules}
        # [exception, seconds on the control, seconds on the correct implementation]
        costs = {nodeid: [rec["exception"], rec["duration"], base_out[nodeid]["duration"]]
                 for nodeid, rec in killed.items()}
        by_cost = sorted(costs, key=lambda n: (sum(costs[n][1:]), n))
        cheapest = by_cost[:RECORDED_KILLS] + [n for n in by_cost if is_property_test(n)][:1]
        by_clause = sorted({c for rec in killed.values() for c in rec.get("clauses", ()) if c in clauses})
        record["controls"][name] = {
            "bug": module.BUG, "component": module.COMPONENT, "tier": tier(name), "clauses": list(clauses),
            "killed_by_clauses": by_clause, "kill_count": len(killed),
            "not_kills": {why: sum(1 for w in others.values() if w == why) for why in sorted(set(others.values()))},
            "modules": {short(m): c for m, c in per_module.items() if c},
            "kills": {nodeid: costs[nodeid] for nodeid in sorted(set(cheapest))}}
        cells = [str(per_module[m]) if per_module[m] else "·" for m in modules]
        rows.append(f"| `{name}` | " + " | ".join(cells) + f" | **{len(killed)}** |")
        if not killed:
            holes.append(name)
        lines = [f"### `{name}` ({module.COMPONENT})", "", module.BUG + ".", "",
                 f"Breaks {', '.join(f'`{c}`' for c in clauses)}; killed by assertions of "
                 f"{', '.join(f'`{c}`' for c in by_clause) or '**none**'}."
                 + (f" Failures not counted: " + ", ".join(f"{n} ({why})" for why, n in
                                                           record['controls'][name]['not_kills'].items()) + "."
                    if others else ""), ""]
        if killed:
            for m in modules:
                ids = sorted(n for n in killed if module_of(n) == m)
                if ids:
                    tests = ", ".join(f"`{n.split('::', 1)[1]}`" for n in ids)
                    lines.append(f"- `{m}` ({len(ids)}): {tests}; e.g. {_why(killed[ids[0]])}")
        else:
            lines.append("- **HOLE: no assertion of its clauses fails.**" if others else "- **HOLE: no test fails.**")
        details += lines + [""]
        bad = {n: r for n, r in result["outcomes"].items() if r["outcome"] == "error"}
        bad.update({n: {"message": m} for n, m in result["collect_errors"].items()})
        for nodeid, rec in sorted(bad.items()):
            errors.append(f"- `{name}`: `{nodeid}`: {rec['message']}")
    record["smoke"] = smoke_cover(killers, {n: base_out[n]["duration"] for n in killers})
    record["smoke"].update({n: cs for n, cs in clause_cover(base_out, set(record["smoke"])).items()
                            if n not in record["smoke"]})
    record["baseline"] = {"counts": counts,
                          "not_passing": sorted(n for n, r in base_out.items() if r["outcome"] in ("failed", "error"))}
    positive_rows, false_alarms = [], []
    record["positive"] = {}
    for key in sorted(k for k in results if k.startswith(POSITIVE)):
        name, result = key[1:], results[key]
        module = positive_controls.load_control(name)
        out = result["outcomes"]
        tally = {k: sum(1 for r in out.values() if r["outcome"] == k) for k in ("passed", "failed", "error",
                                                                               "skipped")}
        allowed = set(getattr(module, "EXPECTED_FAIL_CLAUSES", ()))
        # a failure judging only the control's expected clauses (a 16-bit numerics finding) is recorded apart
        expected = {n: r["message"] for n, r in sorted(out.items()) if r["outcome"] == "failed" and allowed
                    and r.get("clauses") and set(r["clauses"]) <= allowed}
        failed = {n: r["message"] for n, r in sorted(out.items()) if r["outcome"] in ("failed", "error")
                  and n not in expected}
        failed.update({n: m for n, m in result["collect_errors"].items()})
        if result["exit"] == -1:
            failed["<run>"] = "did not finish: " + result.get("output", "")[-200:]
        record["positive"][name] = {"variant": module.VARIANT, "component": module.COMPONENT, **tally,
                                    "failed": failed, "selection": _selection(out, record["controls"],
                                                                              module.COMPONENT, modules)}
        if allowed:
            fails = sorted({c for n in expected for c in out[n]["clauses"]})
            record["positive"][name].update(expected_fail_clauses=sorted(allowed), expected_failures=expected,
                                            failed_clauses=fails)
        positive_rows.append(f"| `{name}` | {module.COMPONENT} | {module.VARIANT} | {tally['passed']} | "
                             f"{tally['skipped']} | {'**' + str(len(failed)) + '**' if failed else 0} |"
                             + (f" {len(expected)} expected ({', '.join(f'`{c}`' for c in fails)}) |" if allowed
                                else " — |"))
        false_alarms += [f"- `{name}`: `{n}`: {_why({'message': m})}" for n, m in failed.items()]

    doc = [
        "# Kill matrix: which property catches which bug", "",
        f"Generated by `{COMMAND}` ({record['generated']}, torch {record['torch']}; the `ci` Hypothesis profile "
        f"without shrinking, {mode['max_examples'] or 'the profile default'} examples per test, `--device cpu`"
        f"{'' if mode['include_slow'] else ', tests marked `slow` left out'}"
        f"{'; each control stopped at its first kill, cheapest tests first' if mode['first_kill'] else ''}; "
        f"{wall:.0f} s wall). Do not edit by hand.", "",
        "Each **negative control** in `tests/negative_controls/` is the correct implementation with exactly one "
        "realistic bug (one patch to the shared base, `_base.install`), importable as "
        "`pytest --impl tests.negative_controls.<name>`. A test **kills** a control when it fails on the control "
        "and passes on `scratch_transformer`, is a property test (not a kit test), fails by an assertion or by the "
        "implementation raising (a non-finite reference or a crash of the kit's own code is a test error, not a "
        "verdict), and judges one of the clauses the control's bug breaks (its `CLAUSES`), so that clause shows "
        "FAIL on the card; setup and collection errors never count. A cell is the number of "
        "tests of that module that kill the control (`·`: none). A control that nothing kills is a hole in the "
        "suite, to be closed with a new property, never by dropping the control. "
        "`tests/test_negative_controls.py` re-checks every control in CI (slow tier) against the smoke tests counted "
        "for it and its cheapest kill in a property module (the "
        f"{RECORDED_KILLS} cheapest kills of each, and the cheapest property kill, are recorded in "
        "`tests/negative_controls/expected_kills.json`).",
        "",
        f"**{len(names)} controls; {len(names) - len(holes) - len(not_run)} caught, {len(holes)} holes"
        + (f", {len(not_run)} not run" if not_run else "") + ".** "
        f"Correct implementation: {counts['passed']} passed, {counts['skipped']} skipped, "
        f"{counts['failed']} failed, {counts['error']} errors.", "",
    ]
    if positive_rows:
        apart = sorted(n for n, e in record["positive"].items() if e.get("expected_fail_clauses"))
        alarmed = {a.split('`')[1] for a in false_alarms}
        clean = len(positive_rows) - len(alarmed | set(apart))
        doc += [f"**{len(positive_rows)} positive controls; {clean} pass every test"
                + "".join(f", `{n}` fails only its expected clauses "
                          f"({', '.join(record['positive'][n]['failed_clauses']) or 'none'})"
                          for n in apart if n not in alarmed)
                + f"; {len(false_alarms)} false alarms.**", ""]
    if holes:
        doc += ["## Holes", ""] + [f"- `{n}`: {load_control(n).BUG}" for n in holes] + [""]
    if positive_rows:
        doc += ["## Positive controls (specificity: every correct implementation passes)", "",
                "Each **positive control** in `tests/positive_controls/` is correct under the README's contract but "
                "written differently from `scratch_transformer`, the way real code is (one patch to the shared base, "
                "or written independently). It runs the same tests as a negative control, without `--strict-tier` "
                "(the strict tier is this package's own choices): every failure is a false alarm, a bug of the "
                "suite. `tests/test_positive_controls.py` re-checks each in CI on a recorded selection of tests "
                "(every module's cheapest, and those that kill negative controls of the same component).", "",
                "A positive control with `EXPECTED_FAIL_CLAUSES` (`arith_16bit`: 16-bit arithmetic throughout) is "
                "correct in float32/float64 and a 16-bit-arithmetic model in float16/bfloat16: it is recorded apart, "
                "its failures judging only those numerics clauses are expected (their clauses listed), and any "
                "other failure is a false alarm.", "",
                "| positive control | component | how it differs | passed | skipped | false alarms | expected failures |",
                "|---|---|---|---|---|---|---|", *positive_rows, ""]
        if false_alarms:
            doc += ["### False alarms", "", *false_alarms, ""]
    header = "first test that kills it" if mode["first_kill"] else "tests that kill it"
    doc += ["## Negative controls (sensitivity: every bug is caught)", "",
            "A control marked *strict* breaks only a strict clause (this package's own choice beyond the contract): "
            "it is run with `--strict-tier` and killed by strict tests; every other control is run on the contract "
            "tier alone, as any `--impl` is.", "",
            f"| control | tier | component | bug | killed by clause | {header} |", "|---|---|---|---|---|---|"]
    for name in names:
        module = load_control(name)
        entry = record["controls"].get(name, {})
        killed = entry.get("kills", {})
        cell = "not run" if name in not_run else (
            ", ".join(f"`{n.split('::', 1)[1]}`" for n in killed) or "**none**" if mode["first_kill"]
            else entry["kill_count"])
        by = ", ".join(f"`{c}`" for c in entry.get("killed_by_clauses", ())) or "**none**"
        doc.append(f"| `{name}` | {tier(name)} | {module.COMPONENT} | {module.BUG} | {by} | {cell} |")
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


def smoke_check(record: dict[str, Any], names: list[str], root: Path, *, timeout: float,
                console: Console) -> dict[str, Any]:
    """Run the smoke tier as users will (``ci`` profile, its own example count, cheapest test first) on
    the correct implementation and on every control; a control it misses gets its next-cheapest recorded kill
    added to the tier, and is run again (at most ``SMOKE_ROUNDS`` rounds). Updates ``record["smoke"]``."""
    smoke: dict[str, list[str]] = record["smoke"]
    cost = kill_costs(record)
    todo = [n for n in names if n in record["controls"] and record["controls"][n]["kills"]]
    caught: dict[str, str | None] = {}
    for _ in range(SMOKE_ROUNDS):
        ids = sorted(smoke, key=lambda n: (cost.get(n, 0.0), n))
        entries = [{"impl": BASELINE, "args": [*ids, *PYTEST_ARGS]}]
        # no -x: a smoke test may fail on a control without being its kill (another clause's test), and must not
        # stop the run before the one that is
        entries += [{"impl": dotted(n), "args": [*ids, *PYTEST_ARGS, *tier_args(n)], "order": cost}
                    for n in todo]
        baseline, *results = run_impls(entries, timeout=timeout, root=root)
        bad = {k: v["message"] for k, v in baseline["outcomes"].items() if v["outcome"] in ("failed", "error")}
        if baseline["exit"] != 0 or bad:
            raise SystemExit(f"the smoke tier fails on the correct implementation: {bad or baseline}")
        missed = []
        for name, result in zip(todo, results):
            clauses = control_clauses(name)
            failed = sorted(k for k, v in result["outcomes"].items() if v["outcome"] == "failed"
                            and not not_a_kill(v, k, clauses))
            caught[name] = failed[0] if failed else None
            if not failed:
                missed.append(name)
        for name in missed:  # the next-cheapest recorded kill not yet in the tier
            spare = sorted((n for n in record["controls"][name]["kills"] if n not in smoke),
                           key=lambda n: (cost[n], n))
            if spare:
                smoke[spare[0]] = [name]
        console.log(f"smoke tier: {len(smoke)} tests, {len(todo) - len(missed)}/{len(todo)} controls caught, "
                    f"correct implementation {baseline['wall']:.1f} s in-process")
        if not missed:
            break
        todo = missed
    return {"caught": dict(sorted(caught.items())), "missed": sorted(n for n, t in caught.items() if t is None),
            "tests": len(smoke), "seconds_on_correct": round(sum(cost.get(n, 0.0) for n in smoke), 2)}


def smoke_section(record: dict[str, Any]) -> str:
    """The document's account of the smoke tier."""
    check = record["smoke_check"]
    lines = ["## Smoke tier (`pytest -m smoke`)", "",
             f"{check['tests']} tests chosen by a greedy weighted set cover over the kills above (most "
             "not-yet-killed controls per second on the correct implementation), then run as users run them "
             "(`ci` profile, its own 20 examples) on every control, counting a failure only when it is a kill by the rule "
             "above; a control the set missed got its "
             "next-cheapest kill added. The tier is recorded in `expected_kills.json` (`smoke`), the root conftest "
             "marks those tests `smoke`, and `tests/test_negative_controls.py` re-checks it in CI. "
             f"Test time on the correct implementation: {check['seconds_on_correct']:.1f} s (collection not "
             "counted).", "",
             f"**{len(check['caught']) - len(check['missed'])} of {len(check['caught'])} controls caught by the "
             "smoke tier.**" + (f" Missed: {', '.join(check['missed'])}." if check["missed"] else ""), "",
             "| smoke test | counted for |", "|---|---|"]
    lines += [f"| `{t}` | {', '.join(f'`{c}`' for c in cs) or '(clause cover)'} |"
              for t, cs in sorted(record["smoke"].items())]
    lines += ["", "*(clause cover)*: the cheapest test (at most "
              f"{CLAUSE_COVER_CAP:.0f} s) of a contract clause nothing else in the tier judges, so a green smoke card "
              "says \"not run\" only for clauses that need slow machinery (`clause_cover`). Every own-evidence test "
              "(`@pytest.mark.own_evidence`) is in the tier too (the root conftest marks it), so its FAILs are "
              "attributed on evidence."]
    return "\n".join(lines)


#: FAIL rows of each control's smoke card before issue 31 (main f1ce7ed, the tier of that commit):
#: ``smoke_cards_before.json``, for the document's before/after column.
CARDS_BEFORE = Path(__file__).with_name("smoke_cards_before.json")


def root_groups(name: str) -> list[tuple[str, ...]]:
    """The clause groups a control's card must show a root in: one per bug (``ROOTS`` of a double-bug control), else
    its ``CLAUSES`` as one group."""
    module = load_control(name)
    return [tuple(g) for g in getattr(module, "ROOTS", (module.CLAUSES,))]


def roots_verdict(name: str, roots: list[str]) -> str:
    """"ok" when the card's roots are non-empty, within the control's clauses and hit every group of
    :func:`root_groups`; else what is wrong."""
    groups = root_groups(name)
    allowed = {c for g in groups for c in g}
    if not roots:
        return "no root"
    extra = sorted(set(roots) - allowed)
    missed = [g for g in groups if not set(g) & set(roots)]
    return "ok" if not extra and not missed else "; ".join(
        ([f"roots outside its clauses: {', '.join(extra)}"] if extra else [])
        + [f"no root among {', '.join(g)}" for g in missed])


def smoke_cards(names: list[str], root: Path, *, jobs: int, timeout: float, console: Console) -> dict[str, Any]:
    """Each control's smoke card (``pytest -m smoke --card-json``, as users run the tier): its FAIL rows, roots and
    the FAILs that follow from them (``reference.kit.verdict``)."""
    def one(name: str) -> tuple[str, dict[str, Any]]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "card.json"
            cmd = [sys.executable, "-m", "pytest", "-m", "smoke", "-p", "no:cacheprovider", "-q",
                   "--impl", dotted(name), f"--card-json={path}", *tier_args(name)]
            try:
                subprocess.run(cmd, cwd=root, env={**child_env(root), "CI": "true"}, capture_output=True,
                               timeout=timeout)
            except subprocess.TimeoutExpired:
                return name, {"error": f"timed out after {timeout:.0f} s"}
            if not path.exists():
                return name, {"error": "no card written"}
            rows = [r for r in json.loads(path.read_text())["clauses"] if r["status"] == "FAIL"]
        roots = [r["clause"] for r in rows if not r.get("follows_from")]
        return name, {"fail_rows": len(rows), "roots": roots,
                      "following": {r["clause"]: r["follows_from"] for r in rows if r.get("follows_from")},
                      "verdict": roots_verdict(name, roots)}

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        cards = dict(pool.map(one, names))
    bad = sorted(n for n, c in cards.items() if c.get("verdict") != "ok")
    console.log(f"smoke cards: {len(cards) - len(bad)}/{len(cards)} controls with their roots within their clauses"
                + (f"; not: {', '.join(bad)}" if bad else ""))
    return cards


def roots_section(record: dict[str, Any]) -> str:
    """The document's account of the roots on each control's smoke card (issue 31, "one bug, one root")."""
    cards = record["smoke_cards"]
    before = json.loads(CARDS_BEFORE.read_text()) if CARDS_BEFORE.exists() else {}
    ok = sum(1 for c in cards.values() if c.get("verdict") == "ok")
    exact = sum(1 for c in cards.values() if c.get("verdict") == "ok" and c.get("fail_rows") == len(c["roots"]))
    lines = ["## Roots on the smoke cards (`pytest -m smoke --impl <control> --card-json`)", "",
             "Each control's smoke card, run as users run the tier. A FAIL row is a **root** or names the roots it "
             "follows from (`reference.kit.verdict`: a FAIL follows when every failing test of its clause relies on "
             "a clause that FAILs, by `clauses.toml` `[given]` or the test's `own_evidence(given=...)`; see "
             "docs/clauses.md, \"Roots\"). Goal: roots non-empty and within the control's `CLAUSES`; a double-bug "
             "control (`ROOTS`) shows a root for each bug. *FAIL rows before*: the same tier's card before roots "
             f"were decided (`{CARDS_BEFORE.name}`, main f1ce7ed), every FAIL row then read as a finding.", "",
             f"**{ok} of {len(cards)} controls: roots within their clauses"
             f"{' and one per bug' if any(hasattr(load_control(n), 'ROOTS') for n in cards) else ''}; "
             f"{exact} with no FAIL row but their roots.**", "",
             "| control | its clauses | FAIL rows before | FAIL rows now | roots | following | verdict |",
             "|---|---|---|---|---|---|---|"]
    for name, card in sorted(cards.items()):
        groups = " + ".join(", ".join(f"`{c}`" for c in g) for g in root_groups(name))
        if "error" in card:
            lines.append(f"| `{name}` | {groups} | {before.get(name, '-')} | - | - | - | {card['error']} |")
            continue
        lines.append(f"| `{name}` | {groups} | {before.get(name, '-')} | {card['fail_rows']} | "
                     + ", ".join(f"`{c}`" for c in card["roots"]) + f" | {len(card['following'])} | "
                     f"{card['verdict']} |")
    return "\n".join(lines)


def compare_section(record: dict[str, Any], old: dict[str, Any], path: Path) -> str:
    """Before/after, per control: kills then (every failing test counted) and now (by the kill rule), the clauses
    that kill it now, whether the smoke tier catches it then and now; the positive controls' false alarms."""
    smoke_then = {c for cs in old.get("smoke", {}).values() for c in cs}
    smoke_now = {c for cs in record.get("smoke", {}).values() for c in cs}
    lines = [f"## Before and after (`--compare {path.as_posix()}`, generated {old.get('generated', '?')})", "",
             "Kills then counted every test failing on the control and passing on the correct implementation; now "
             "only assertions of the control's own clauses (above). A control new since then shows `-`.", "",
             "| control | kills then | kills now | killed by clause now | in smoke then | in smoke now |",
             "|---|---|---|---|---|---|"]
    for name, entry in sorted(record["controls"].items()):
        then = old.get("controls", {}).get(name)
        lines.append(f"| `{name}` | {then['kill_count'] if then else '-'} | {entry['kill_count']} | "
                     + ", ".join(f"`{c}`" for c in entry.get("killed_by_clauses", ())) + f" | "
                     f"{'yes' if name in smoke_then else ('-' if not then else 'no')} | "
                     f"{'yes' if name in smoke_now else 'no'} |")
    lines += ["", f"Smoke tier: {len(old.get('smoke', {}))} tests then, {len(record.get('smoke', {}))} now.", "",
              "| positive control | false alarms then | false alarms now |", "|---|---|---|"]
    for name, entry in sorted(record.get("positive", {}).items()):
        then = old.get("positive", {}).get(name)
        lines.append(f"| `{name}` | {len(then['failed']) if then else '-'} | {len(entry['failed'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controls", help="comma-separated control names (default: all)")
    parser.add_argument("--modules", nargs="+", help="test modules (default: the whole suite)")
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (default 2)")
    parser.add_argument("--budget", type=float, default=7200.0, help="seconds; no run starts after (default 7200)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run (default 3600)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--max-examples", type=int, default=DEFAULT_EXAMPLES,
                        help=f"Hypothesis examples per test (default {DEFAULT_EXAMPLES}; the ci profile has 20)")
    parser.add_argument("--no-positives", action="store_true", help="leave the positive controls out")
    parser.add_argument("--first-kill", action="store_true",
                        help="stop each control at its first killing test, cheapest tests first (a partial matrix)")
    parser.add_argument("--include-slow", action="store_true", help="also run tests marked slow")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"result cache (default {DEFAULT_CACHE})")
    parser.add_argument("--no-cache", action="store_true", help="rerun everything")
    parser.add_argument("--compare", type=Path, metavar="OLD_JSON",
                        help="an earlier expected_kills.json: the document gains a before/after section per control")
    args = parser.parse_args(argv)

    all_names = control_names()
    names = args.controls.split(",") if args.controls else all_names
    unknown = sorted(set(names) - set(all_names))
    if unknown:
        parser.error(f"unknown controls: {', '.join(unknown)}")
    modules = args.modules or suite_modules()
    full = not args.controls and not args.modules and not args.no_positives
    positives = [] if args.controls or args.no_positives else [POSITIVE + n for n in positive_controls.control_names()]
    console = Console(stderr=True)
    for name in names:  # import errors surface here, before any run
        load_control(name)
    common = [*modules, *PYTEST_ARGS, *(() if args.include_slow else NOT_SLOW)]
    mode = {"max_examples": args.max_examples, "include_slow": args.include_slow, "first_kill": args.first_kill}
    args.cache.mkdir(parents=True, exist_ok=True)

    tree = snapshot(Path(tempfile.mkdtemp(prefix="kill-matrix-tree-")))
    atexit.register(shutil.rmtree, tree, True)
    keys = {name: fingerprint(name, modules, mode, tree) for name in [BASELINE, *names, *positives]}

    def cache_file(name: str) -> Path:
        return args.cache / f"{name}-{keys[name]}.json"

    def entry(name: str, baseline: dict[str, Any]) -> dict[str, Any]:
        """The run of a control: only tests that see the implementation and pass on the correct one."""
        outcomes = baseline["outcomes"]
        record = {"impl": impl_of(name), "args": [*common, *tier_args(name)], "max_examples": args.max_examples,
                  "impl_only": True,
                  "deselect": sorted(n for n, r in outcomes.items() if r["outcome"] in ("failed", "error"))}
        if args.first_kill:
            record["args"].append("-x")
            record["order"] = {n: r["duration"] for n, r in outcomes.items()}
        return record

    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        task = progress.add_task("kill matrix", total=len(names) + len(positives) + 1)

        def finish(name: str, result: dict[str, Any], cached: bool = False) -> None:
            results[name] = result
            if not cached and result["exit"] != -1:
                cache_file(name).write_text(json.dumps(result))
            failed = sum(1 for r in result["outcomes"].values() if r["outcome"] == "failed")
            status = "[red]did not finish[/]" if result["exit"] == -1 else f"{failed} failing"
            took = "cached" if cached else f"{result['wall']:.0f} s"
            progress.console.log(f"{name}: {status} ({took})")
            progress.advance(task)

        queue = [BASELINE, *names, *positives]
        for name in list(queue):
            if cache_file(name).exists() and not args.no_cache:
                finish(name, json.loads(cache_file(name).read_text()), cached=True)
                queue.remove(name)
        if BASELINE in queue:  # first, alone: the control runs leave out what fails on it
            queue.remove(BASELINE)
            progress.update(task, description="correct implementation")
            finish(BASELINE, run_impls([{"impl": BASELINE, "args": common, "max_examples": args.max_examples}],
                                       timeout=args.timeout, root=tree)[0])
        progress.update(task, description="controls")
        pending: dict[Future, str] = {}
        while queue or pending:
            while queue and len(pending) < max(1, args.jobs) and time.perf_counter() - start < args.budget:
                name = queue.pop(0)
                pending[pool.submit(run_impls, [entry(name, results[BASELINE])], timeout=args.timeout,
                                    root=tree)] = name
            if not pending:
                break  # budget spent
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name = pending.pop(future)
                finish(name, future.result()[0])
        if queue:
            console.log(f"[yellow]budget of {args.budget:.0f} s spent: {len(queue)} runs not started")
    wall = time.perf_counter() - start
    if results[BASELINE]["exit"] == -1:
        console.log("[red]the correct implementation's run did not finish")
        return 2

    doc, record = build_report(modules, names, results, wall, mode)
    if full and not args.first_kill:
        check = smoke_check(record, names, tree, timeout=args.timeout, console=console)
        record["smoke_check"] = check
        doc = doc.rstrip() + "\n\n" + smoke_section(record) + "\n"
        # the cards run the tier just chosen: the snapshot's record gets its smoke set (the plugin reads it there)
        snapshot_record = tree / EXPECTED_KILLS.relative_to(ROOT)
        snapshot_record.write_text(json.dumps({**json.loads(snapshot_record.read_text()), "smoke": record["smoke"]}))
        record["smoke_cards"] = smoke_cards(names, tree, jobs=args.jobs, timeout=args.timeout, console=console)
        doc = doc.rstrip() + "\n\n" + roots_section(record) + "\n"
    if args.compare:
        doc = doc.rstrip() + "\n\n" + compare_section(record, json.loads(args.compare.read_text()), args.compare) + "\n"
    table = Table("control", "kills", "modules")
    for name in names:
        entry = record["controls"].get(name)
        table.add_row(name, str(entry["kill_count"]) if entry else "not run", ", ".join(entry["modules"]) if entry else "")
    console.print(table)
    if full and not args.no_write:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(doc)
        EXPECTED_KILLS.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        console.log(f"wrote {DOC.relative_to(ROOT)} and {EXPECTED_KILLS.relative_to(ROOT)}")
    uncaught = [n for n in names if not record["controls"].get(n, {}).get("kills")]
    if uncaught:
        console.log(f"[red]not caught: {', '.join(uncaught)}")
    alarms = [n for n, e in record["positive"].items() if e["failed"]]
    if alarms:
        console.log(f"[red]false alarms on positive controls: {', '.join(alarms)}")
    if record["baseline"]["not_passing"]:
        console.log(f"[red]failing on the correct implementation: {', '.join(record['baseline']['not_passing'])}")
    smoke_missed = record.get("smoke_check", {}).get("missed")
    if smoke_missed:
        console.log(f"[red]the smoke tier misses: {', '.join(smoke_missed)}")
    bad_roots = sorted(n for n, c in record.get("smoke_cards", {}).items() if c.get("verdict") != "ok")
    if bad_roots:
        console.log(f"[red]smoke cards whose roots miss their clauses: {', '.join(bad_roots)}")
    return 1 if uncaught or alarms or record["baseline"]["not_passing"] or smoke_missed or bad_roots else 0


if __name__ == "__main__":
    raise SystemExit(main())
