"""Run pytest against one or more implementations in one process and record every test's outcome as JSON.

``python -m tests.negative_controls._run SPEC.json OUT.json``. SPEC is a list of entries ``{"impl": dotted name,
"args": [pytest arguments], "max_examples": int, "impl_only": bool, "deselect": [nodeid], "order": {nodeid:
seconds}}`` (all but ``impl`` and ``args`` optional). Each entry is one ``pytest.main`` session (``--impl`` added),
run one after another in this process: the test modules reach the implementation only through the session's
``impl`` fixture, so one process can judge many implementations without importing torch again each time. OUT is
the list of results, one per entry: ``{"impl", "exit", "wall", "outcomes": {nodeid: {"outcome", "phase",
"duration", "exception", "message"}}, "collect_errors"}``.

Outcomes: ``passed``, ``failed`` (the test body raised: an assertion, or the bug's own exception), ``error`` (setup
or teardown raised: never counted as catching a bug), ``skipped``, ``xfailed``, ``xpassed``. Hypothesis runs under
the ``ci`` profile without the shrink phase and stops at its first failing example: only *whether* a test fails
matters here, not the minimal example (a failure is still replayed once, as Hypothesis always does).

Entry options: ``max_examples`` overrides the profile's (the kill matrix trades examples for time; the CI re-check
uses the same number, so a recorded kill reproduces exactly). ``impl_only`` deselects tests that request neither
the ``impl`` nor the ``impl_name`` fixture: the suite reaches the implementation only through those, so such a test
cannot tell one implementation from another. ``deselect`` leaves the given tests out. ``order`` runs the tests by
increasing cost (unknown ones last), so that ``-x`` stops at the cheapest failure.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, settings

PROFILE = "negative-controls"
#: The profile the runs derive from: CI's deterministic one (registered by the root conftest).
BASE_PROFILE = "ci"
#: The fixtures through which a test reaches the implementation under test.
IMPL_FIXTURES = frozenset({"impl", "impl_name"})
ROOT = Path(__file__).resolve().parents[2]


def _message(report: Any) -> str:
    """First line of a report's crash message (``ExceptionType: text``), at most 300 characters."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or str(report.longrepr or "")
    return (text.strip().splitlines() or [""])[0][:300]


#: Origins of a failure (``failure_origin``): only the first two are verdicts on the implementation.
ASSERTION, IMPLEMENTATION, NON_FINITE_REFERENCE, KIT_CRASH = "assertion", "implementation", "non-finite reference", \
    "kit crash"
VERDICTS = frozenset({ASSERTION, IMPLEMENTATION})
#: The kit's own code: a crash whose innermost frame in this tree is here is the kit's, not a verdict.
_KIT_DIR = ROOT / "reference"
_KIT_FILES = frozenset({ROOT / "tests" / "support.py", ROOT / "tests" / "strategies.py"})


def failure_origin(excinfo: Any) -> str:
    """What a failing test's exception says: an ``assertion`` of the test or the judge, the ``implementation``
    raising on the test's (valid) inputs, a ``non-finite reference`` (the oracle or torch gave NaN/inf: a test error
    by the kit's own rule), or a ``kit crash`` (an oracle, adapter or other ``reference/`` code raised: e.g. a
    ``KeyError`` for a parameter the oracle expects). Only the first two are verdicts (issue 24)."""
    if any(cls.__name__ == "NonFiniteReference" for cls in type(excinfo.value).__mro__):
        return NON_FINITE_REFERENCE
    if excinfo.errisinstance(AssertionError):
        return ASSERTION
    for entry in reversed(excinfo.traceback):  # the innermost frame in this tree decides
        path = Path(str(entry.path).split(" [", 1)[0])  # a control's frames read ".../model.py [control]"
        if ROOT in path.parents:
            return KIT_CRASH if _KIT_DIR in path.parents or path in _KIT_FILES else IMPLEMENTATION
    return IMPLEMENTATION


class Recorder:
    """pytest plugin object: per-test outcome, phase, call duration and crash message; collection errors."""

    def __init__(self, max_examples: int | None = None, impl_only: bool = False, deselect: list[str] = (),
                 order: dict[str, float] | None = None) -> None:
        self.max_examples = max_examples
        self.impl_only = impl_only
        self.deselect = set(deselect)
        self.order = order
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.collect_errors: dict[str, str] = {}
        self._exc_types: dict[str, str] = {}
        self._origins: dict[str, str] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        extra = {"max_examples": self.max_examples} if self.max_examples else {}
        settings.register_profile(PROFILE, parent=settings.get_profile(BASE_PROFILE), report_multiple_bugs=False,
                                  phases=[Phase.explicit, Phase.reuse, Phase.generate], **extra)
        settings.load_profile(PROFILE)

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        def wanted(item: pytest.Item) -> bool:
            if item.nodeid in self.deselect:
                return False
            return not self.impl_only or bool(IMPL_FIXTURES & set(getattr(item, "fixturenames", ())))

        keep = [item for item in items if wanted(item)]
        if len(keep) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if not wanted(item)])
        if self.order is not None:
            keep.sort(key=lambda item: self.order.get(item.nodeid, float("inf")))
        items[:] = keep

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        outcome = yield
        report = outcome.get_result()
        if report.failed and call.excinfo is not None:
            self._exc_types[report.nodeid] = call.excinfo.typename
            self._origins[report.nodeid] = failure_origin(call.excinfo)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors[report.nodeid or "<session>"] = _message(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.outcomes.setdefault(report.nodeid, {"outcome": "passed", "phase": "call", "duration": 0.0,
                                                         "exception": "", "message": "", "origin": "",
                                                         "clauses": list(dict(report.user_properties)
                                                                         .get("clauses", ())),
                                                         "own": sorted(dict(report.user_properties).get("own", {}))})
        if report.when == "call":
            entry["duration"] = round(report.duration, 3)
        if hasattr(report, "wasxfail"):
            entry.update(outcome="xfailed" if report.skipped else "xpassed", phase=report.when)
        elif report.failed:
            if entry["outcome"] in ("passed", "skipped"):  # keep the first failure
                entry.update(outcome="failed" if report.when == "call" else "error", phase=report.when,
                             exception=self._exc_types.get(report.nodeid, ""), message=_message(report),
                             origin=self._origins.get(report.nodeid, ""))
        elif report.skipped and entry["outcome"] == "passed":
            entry.update(outcome="skipped", phase=report.when, message=_message(report))


def freeze_survivors() -> None:
    """Move every object alive now (torch, the suite's modules, earlier sessions' leftovers) to the collector's
    permanent generation before the next ``pytest.main`` of this process. Each session ends with full
    collections (pytest's unraisable-exception cleanup) that would otherwise traverse that whole heap: 0.21 s
    each, 22.7 of the 56.8 s the 53 sessions of the negative-controls re-check took (cProfile). Nothing a
    session creates is frozen before it ends, so its own garbage is collected as before."""
    gc.freeze()


def run_one(impl: str, args: list[str], **options: Any) -> dict[str, Any]:
    """One pytest session against ``impl`` (``options``: those of :class:`Recorder`); returns its result record."""
    recorder = Recorder(**options)
    freeze_survivors()
    start = time.perf_counter()
    # --tb=line (first, so that ``args`` may override it): the record keeps each failure's crash line only, and
    # long tracebacks of the failures a control is meant to have cost 29 ms each to format (cProfile).
    code = pytest.main(["--tb=line", *args, "--impl", impl, "-p", "no:cacheprovider"], plugins=[recorder])
    return {"impl": impl, "exit": int(code), "wall": round(time.perf_counter() - start, 2),
            "outcomes": recorder.outcomes, "collect_errors": recorder.collect_errors}


def main(argv: list[str] | None = None) -> int:
    spec_path, out_path = (argv if argv is not None else sys.argv[1:])[:2]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    results = []
    for entry in json.loads(Path(spec_path).read_text()):
        options = {k: entry[k] for k in ("max_examples", "impl_only", "deselect", "order") if k in entry}
        results.append(run_one(entry["impl"], list(entry["args"]), **options))
        Path(out_path).write_text(json.dumps(results))  # partial results survive a timeout
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
