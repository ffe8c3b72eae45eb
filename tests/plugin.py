"""The suite's pytest plugin: the implementation under test, devices, dtypes and Hypothesis profiles.

Loaded by the root ``conftest.py`` in a clone (``pytest_plugins``) and with ``-p tests.plugin`` by
``scratch-transformer-check`` on the installed copy (docs/guide.md, "Run the kit from your own repository"). It
registers the suite's markers and warning filters itself, so the installed copy needs no ini file.

* ``--impl MODULE`` (or env ``SCRATCH_TRANSFORMER_IMPL``): the contract implementation to test
  (default ``scratch_transformer``).
* ``--strict-tier`` (env ``SCRATCH_TRANSFORMER_STRICT=1``): run the strict tier (this package's own choices beyond the README's contract, ``@pytest.mark.strict``)
  on a foreign ``--impl`` too; it always runs for ``scratch_transformer`` (see ``reference/spec/clauses.py``).
* ``--device {cpu,cuda,all}``: narrow the ``device`` fixture (default: all; CUDA cases skip without a GPU).
* ``--hypothesis-profile {ci,dev,thorough}``: ``ci`` is the default when ``CI=true``, else ``dev``. ``ci`` does not
  shrink a failing example (it prints the first one it found, and runs are derandomized); nor does any profile when
  ``--impl`` names another implementation, unless ``--hypothesis-profile`` is given explicitly: a broken model fails
  as fast as a correct one passes (``dev`` and ``thorough`` shrink for this package, for the minimal example).
* ``-m smoke``: the smoke tier, a few fast tests that together kill every negative control (chosen by the kill
  matrix, ``tests/negative_controls/expected_kills.json``).
* ``--compile`` (``--compile-backend NAME``, default inductor; or env ``SCRATCH_TRANSFORMER_COMPILE=NAME``): every
  module the suite builds through ``reference.spec.contract.construct``/``build_model`` runs under ``torch.compile``.
* ``--variant {pre-norm,post-norm}`` (env ``SCRATCH_TRANSFORMER_VARIANT``): the residual layout the implementation
  declares (``reference.spec.variants``): the oracles, torch references and ``nn.Transformer`` adapters follow it
  (``norm_first=(variant == "pre-norm")``), the tests that judge the residual count for ``residual.<variant>``
  (the other variant's clause shows "not run"), and the header and the card name it. Default pre-norm.
* ``--impl-map FILE`` (env ``SCRATCH_TRANSFORMER_IMPL_MAP``): a TOML map of the implementation's own names onto the
  contract's (``reference/kit/adapter.py``). Without one, the API diagnosis (``reference/kit/diagnose.py``, printed in
  the header) proposes the unambiguous entries itself and the run uses them. An API deviation nothing maps stops the
  tests that need that part of the contract: they are skipped as "not reached because of <clause>", but for the
  ``blackbox`` tests, which need only ``build_transformer`` and ``encode``/``decode``/``project``.
* ``--xfails-file FILE``: known, accepted deviations, one per line (a test node id or its prefix, or
  ``clause:<id>``; ``#`` comments): their failures count as expected (xfail).
* ``--card-json PATH``: also write the conformance card (printed at the end of every run: one line per clause) as JSON.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings
from hypothesis import core as hypothesis_core

ROOT = Path(__file__).resolve().parents[1]
from reference.check import USER_PATH_ENV  # noqa: E402

# ``scratch-transformer-check`` (reference/check.py) runs the installed suite with the user's directory in this
# variable: appended to ``sys.path`` (after site-packages, so the installed ``tests`` and ``reference`` are the ones
# found), in this process and in every xdist worker.
for _extra in filter(None, os.environ.get(USER_PATH_ENV, "").split(os.pathsep)):
    if _extra not in sys.path:
        sys.path.append(_extra)

from reference.spec import clauses, contract, variants  # noqa: E402
from reference.kit import components, guard, load, verdict  # noqa: E402
from reference.kit.card import NOT_REACHED, Card, one_line  # noqa: E402
from reference.spec.contract import DEFAULT_IMPL  # noqa: E402
from reference.kit.findings import Diagnosis  # noqa: E402
from tests import COLLECTED_CLAUSES, COLLECTED_NODEIDS  # noqa: E402
from tests.negative_controls import EXPECTED_KILLS  # noqa: E402  (the kill matrix's record: "smoke")

_common = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: No shrink (and so no explain) phase: a failing test stops at its first failing example, printed with its
#: reproduction blob, so a run on a broken model takes no longer than a green one (issue 14).
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target)
settings.register_profile("ci", derandomize=True, database=None, max_examples=20, phases=NO_SHRINK, **_common)
# derandomize=False explicitly: a profile inherits the one loaded when it is registered, which is Hypothesis' own
# derandomized "ci" wherever a CI variable is set (even CI=false), so dev/thorough would not be random there.
settings.register_profile("dev", max_examples=40, derandomize=False, **_common)
settings.register_profile("thorough", max_examples=400, derandomize=False, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI", "").lower() == "true" else "dev"))

#: Random profiles (dev, thorough) run from one seed per session, drawn here unless ``--hypothesis-seed`` is given,
#: shared with xdist workers through the environment and printed in the header and after a failure, so every
#: failing run can be replayed exactly: ``pytest --hypothesis-seed=N``. Each test draws from its own seed, derived
#: from the session's and its node id (``per_test_seed``): sibling tests (parametrisations) draw different examples.
SEED_ENV = "SCRATCH_TRANSFORMER_HYPOTHESIS_SEED"
SESSION_SEED = int(os.environ.setdefault(SEED_ENV, str(random.SystemRandom().randrange(2**32))))


def per_test_seed(session_seed: int | str, nodeid: str) -> int:
    """The Hypothesis seed of test ``nodeid`` in a session seeded ``session_seed``: the first 8 bytes of
    sha256("<session_seed>:<nodeid>") (stable across runs, processes and xdist workers)."""
    digest = hashlib.sha256(f"{session_seed}:{nodeid}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _session_seed(config: pytest.Config) -> int | str:
    """``--hypothesis-seed`` when given, else the seed drawn for this session."""
    seed = config.getoption("hypothesis_seed", None)
    if seed is None:
        return SESSION_SEED
    try:
        return int(seed)  # as Hypothesis' own plugin reads it
    except ValueError:
        return seed


DEVICES = ("cpu", "cuda")

# The suite's tensors are tiny: intra-op threads cost more in synchronisation than they save (measured on the
# 2-core machine under load: a small model's forward 0.5 s with 2 threads, 11 ms with 1), and `pytest -n N` already
# fills the cores with processes.
torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("scratch-transformer")
    group.addoption("--impl", default=os.environ.get("SCRATCH_TRANSFORMER_IMPL", DEFAULT_IMPL),
                    help="module implementing the contract (default: scratch_transformer)")
    group.addoption("--strict-tier", action="store_true",
                    default=os.environ.get("SCRATCH_TRANSFORMER_STRICT", "") not in ("", "0"),
                    help="also run the strict tier (this package's own choices beyond the contract) on a foreign "
                         f"--impl; always on for {DEFAULT_IMPL} (env SCRATCH_TRANSFORMER_STRICT=1). pytest's own "
                         "--strict is a different option")
    group.addoption("--device", default="all", choices=("cpu", "cuda", "all"),
                    help="run device-parametrised tests on this device only (default: all)")
    group.addoption("--variant", default=None, choices=variants.VARIANTS,
                    help="the residual layout the implementation declares: pre-norm (default, the blog's: "
                         "x + dropout(sublayer(norm(x)))) or post-norm (the paper's, nn.Transformer's default: "
                         "norm(x + dropout(sublayer(x)))); or the map's `variant = ...` line; env "
                         "SCRATCH_TRANSFORMER_VARIANT")
    group.addoption("--compile", action="store_true", default=bool(contract.compile_backend()),
                    help="run the suite on torch.compile'd modules (see --compile-backend)")
    group.addoption("--compile-backend", default=contract.compile_backend() or "inductor",
                    help="torch.compile backend for --compile (default inductor; aot_eager/eager compile faster)")
    group.addoption("--impl-map", default=os.environ.get("SCRATCH_TRANSFORMER_IMPL_MAP"), metavar="FILE",
                    help="TOML map of the implementation's own class, argument and attribute names onto the "
                         "contract's (see reference/kit/adapter.py); without one the kit proposes the unambiguous ones")
    group.addoption("--xfails-file", default=None, metavar="FILE",
                    help="accepted deviations, one per line: a test node id (or prefix) or clause:<id>; their "
                         "failures are reported as xfail")
    group.addoption("--card-json", default=None, metavar="PATH", help="also write the conformance card as JSON")
    group.addoption("--call-timeout", type=float, metavar="SECONDS",
                    default=float(os.environ.get("SCRATCH_TRANSFORMER_CALL_TIMEOUT", guard.CALL_TIMEOUT)),
                    help="seconds one call into the implementation may take (its import, the API diagnosis's build "
                         "and forward, each outermost module forward) before it is a FAIL of module.bounded "
                         f"(default {guard.CALL_TIMEOUT:g}; 0: no limit; env SCRATCH_TRANSFORMER_CALL_TIMEOUT)")
    group.addoption("--test-timeout", type=float, metavar="SECONDS",
                    default=float(os.environ.get("SCRATCH_TRANSFORMER_TEST_TIMEOUT", guard.TEST_TIMEOUT)),
                    help="seconds one test of the implementation may take as a whole (not the slow tier) before it "
                         f"is a FAIL of module.bounded (default {guard.TEST_TIMEOUT:g}; 0: no limit)")
    group.addoption("--accept-unjudged", action="store_true",
                    help="exit 0 although a contract clause the selection covers got no verdict (not reached, or "
                         "every test skipped); the run prints each such clause. Without it such a run exits "
                         f"{verdict.NOT_JUDGED} (docs/guide.md, 'Exit codes')")
    group.addoption("--kit-tests", default="run", choices=("run", "deselect"),
                    help="the kit's own tests (clause 'kit': oracles, report, controls, this repository's files): "
                         "run (default in a clone) or deselect (scratch-transformer-check's default: they check "
                         "the kit, not your model, and some need the clone's docs/ and benchmarks/)")
    group.addoption("--dtypes", default=os.environ.get("SCRATCH_TRANSFORMER_DTYPES", ",".join(clauses.DTYPES)),
                    metavar="LIST", help="comma-separated dtypes the kit judges, of " + ",".join(clauses.DTYPES)
                    + " (env SCRATCH_TRANSFORMER_DTYPES; default all): the cases of the others are deselected, "
                      "and the card shows their clauses 'not run (dtypes)'; never run 16-bit? float32,float64")


IMPL = pytest.StashKey[ModuleType]()
GUARD = pytest.StashKey["guard.CallGuard"]()
#: The first call that did not return (module.bounded): every later test of the implementation is not reached.
HUNG = pytest.StashKey[str]()
DIAGNOSIS = pytest.StashKey[Diagnosis]()
CARD = pytest.StashKey[Card]()
#: The run settings before this session set its own (variant, per-head masks, compile backend): restored when it
#: ends, so a session run inside another (``pytest.main`` in a test) leaves the outer one's as they were.
OUTER_SETTINGS = pytest.StashKey[tuple]()


def _check_options(config: pytest.Config) -> None:
    """The kit's own inputs, checked before anything runs (a ``UsageError``, exit 4, naming the option)."""
    if config.getoption("--device") == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: CUDA is not available on this machine (torch "
                                f"{torch.__version__}, cuda build: {torch.version.cuda or 'none'}); a run that judges "
                                "no CUDA case is not a CUDA verdict")
    card_json = config.getoption("--card-json")
    if card_json:
        folder = Path(card_json).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK) or Path(card_json).is_dir():
            raise pytest.UsageError(f"--card-json {card_json}: cannot write there ("
                                    + ("it is a directory" if Path(card_json).is_dir() else
                                       f"{folder} is not a writable directory") + ")")
    xfails = config.getoption("--xfails-file")
    if xfails and not Path(xfails).is_file():
        raise pytest.UsageError(f"--xfails-file {xfails}: no such file")
    for name in ("--call-timeout", "--test-timeout"):
        value = config.getoption(name)
        if not value >= 0:
            raise pytest.UsageError(f"{name} {value}: must be a number of seconds >= 0 (0: no limit)")


def _load(config: pytest.Config) -> None:
    """Import ``--impl``, read ``--impl-map`` and diagnose the API (``reference.kit.load.open_impl``; exit 2 with the
    error when the module cannot be imported or the map cannot be read); keep the module the tests reach, and guard
    every later call into it (``reference.kit.guard``)."""
    name, path = config.getoption("--impl"), config.getoption("--impl-map")
    for stream in (sys.stdout, sys.__stdout__):  # a run killed from outside still shows how far it got
        if stream is not None and hasattr(stream, "reconfigure") and not stream.isatty():
            stream.reconfigure(line_buffering=True)
    if not hasattr(config, "workerinput"):  # shown before the import and the diagnosis, which may hang or crash
        print(f"scratch-transformer: importing {name} and diagnosing its API (watchdog "
              f"{config.getoption('--call-timeout'):g} s per call)", flush=True)
    try:
        config.stash[IMPL], diag = load.open_impl(name, path, call_timeout=config.getoption("--call-timeout") or None)
    except ImportError as exc:
        pytest.exit(str(exc), returncode=2)
    except load.MapError as exc:  # a map that points nowhere: a usage error, exit 4
        raise pytest.UsageError(str(exc)) from exc
    config.stash[DIAGNOSIS] = diag
    try:
        load.use_declared(config.stash[IMPL], diag, config.getoption("--variant"))
    except load.MapError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[GUARD] = guard.CallGuard(load.contract_types(config.stash[IMPL]),
                                          config.getoption("--call-timeout") or None).install()
    user_map = diag.user
    card = Card(name, dtypes=selected_dtypes(config), variant=variants.variant())
    if not torch.cuda.is_available():
        card.unavailable["numerics.tf32"] = "(no CUDA) TF32 matmuls exist only on CUDA; its CPU cases are deselected"
    for clause, what, entries in (("api.names", "class name(s)", [user_map.classes]),
                                  ("api.signatures", "argument(s)", list(user_map.arguments.values())),
                                  ("api.attributes", "attribute(s)", list(user_map.attributes.values()))):
        count = sum(len(e) for e in entries)
        if count:
            card.deviation(clause, f"{count} {what} mapped by --impl-map {path}")
    for f in diag.findings:
        if not f.clause.startswith("module."):  # never accepted by a map: their diagnosis test FAILs them
            card.deviation(f.clause, f.message + (" (mapped)" if f.blocking and f not in diag.unresolved() else ""))
    config.stash[CARD] = card


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """``-n N`` without ``--dist``: schedule by work stealing, not xdist's default ``load``. The suite's few long
    tests (the meta-tests, the field cards, inductor) land unevenly under ``load``; measured on 2 cores, fresh
    inductor cache, the whole suite took 251.7 s with ``load`` and 187.4 s with ``worksteal``."""
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", None) == "no":
        config.option.dist = "worksteal"


def _profile_name() -> str:
    getter = getattr(settings, "get_current_profile_name", None)  # Hypothesis 6.100+
    return getter() if getter else str(getattr(settings, "_current_profile", "?"))


def _random_profile() -> bool:
    return not settings.default.derandomize


#: The suite's markers (``--strict-markers``) and warning filters, registered here rather than in an ini file so that
#: the installed copy (``scratch-transformer-check``, which reads no pyproject) has them too.
MARKERS = (
    "cuda: needs a CUDA device (skips with a reason where there is none)",
    "clause(*ids): the contract clause(s) a test checks (reference/spec/clauses.py; docs/clauses.md)",
    "own_evidence(*ids, given=()): the test judges these of its clauses (all of them when none is named) on their own "
    "evidence: its oracle relies on no other clause but those in given (a property, a composite checked against the "
    "implementation's own children), so its FAIL is a root unless a given clause FAILs (reference/spec/clauses.toml "
    "[given]; reference.kit.verdict)",
    "dtypes(*names): the dtypes a test runs in when no parameter says so (float16, bfloat16, ...; for --dtypes and "
    "the clauses that judge them)",
    "strict(what): beyond the contract, this package's own choice: always run for scratch_transformer, for another "
    "--impl only with --strict",
    "slow: long-running (inductor compilation, the meta-tests that re-run the suite on its controls); deselect with "
    "-m 'not slow'",
    "smoke: the smoke tier: fast tests that together kill every negative control (set by the kill matrix)",
    "faults: fault injection of the kit itself (tests/faults/, tests/test_faults.py): runs faulty modules in "
    "subprocesses; slow",
    "blackbox: needs only build_transformer and encode/decode/project: still runs when an unmapped API deviation "
    "stops the rest",
)
FILTERWARNINGS = (
    "ignore:enable_nested_tensor is True:UserWarning",
    # the kit's own global forward hooks (reference.kit.guard.CallGuard) skip the OptimizedModule wrapper
    "ignore:Using `torch.compile\\(module\\)` when there are global hooks:UserWarning",
)


def pytest_unconfigure(config: pytest.Config) -> None:
    if OUTER_SETTINGS in config.stash:
        contract.use_run_settings(config.stash[OUTER_SETTINGS])


@pytest.hookimpl(trylast=True)  # after Hypothesis' own plugin has read --hypothesis-seed
def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    for line in FILTERWARNINGS:
        config.addinivalue_line("filterwarnings", line)
    _check_options(config)
    config.stash[OUTER_SETTINGS] = contract.run_settings()
    # before the card, and before collection imports the tests; the map's line may declare it (``load.use_declared``).
    # Set every session: one process may run several (tests/field/_cards.py)
    variants.use_variant(config.getoption("--variant") or os.environ.get(variants.VARIANT_ENV) or None)
    _load(config)
    contract.use_compile(config.getoption("--compile-backend") if config.getoption("--compile") else None)
    if _random_profile():  # per test: pytest_runtest_call; this one covers Hypothesis run outside a test
        hypothesis_core.global_force_seed = _session_seed(config)
    if config.getoption("--impl") != DEFAULT_IMPL and config.getoption("hypothesis_profile", None) is None \
            and Phase.shrink in settings.default.phases:
        # A conformance run on foreign code: report the first failing example instead of shrinking it (minutes per
        # failing test); `--hypothesis-profile dev` asks for shrinking explicitly.
        name = f"{_profile_name()}-no-shrink"
        settings.register_profile(name, parent=settings.default, phases=NO_SHRINK)
        settings.load_profile(name)


@pytest.hookimpl(hookwrapper=True)  # old-style wrapper: pytest 7 (pyproject's floor) has no wrapper=True
def pytest_runtest_call(item: pytest.Item):
    """Random profiles: the test draws from ``per_test_seed(session seed, node id)`` (Hypothesis reads
    ``global_force_seed`` when the test runs; a test's own ``@seed`` still wins).

    A test of the implementation runs guarded (``reference.kit.guard``): a deadline on the whole test (not in the
    slow tier), the call guard reset, and torch's global state compared before and after (a change is a FAIL of
    module.pure) and restored, so one model's side effect cannot poison the tests that follow."""
    if _random_profile():
        hypothesis_core.global_force_seed = per_test_seed(_session_seed(item.config), item.nodeid)
    guarded = "impl" in getattr(item, "fixturenames", ())
    call_guard = item.config.stash.get(GUARD, None)
    limit = item.config.getoption("--test-timeout") if guarded and not item.get_closest_marker("slow") else 0
    if contract.compile_backend():  # --compile: every test compiles its modules first (minutes on 2 cores)
        limit *= COMPILE_TIMEOUT_FACTOR
    dog = guard.watchdog()
    if call_guard is not None:
        call_guard.reset()
    dog.push(item, limit or None, f"the test {item.name} (as a whole)")
    own_backstop = limit and not float(item.config.getini("faulthandler_timeout") or 0)  # pytest's is the user's
    with guard.restored_state() as changed, guard.backstop(limit + guard.BACKSTOP_GRACE if own_backstop else None):
        outcome = yield  # the outcome (raised or not) is pytest's to report
        try:
            dog.pop(item)
        except guard.ModelHung:  # the deadline fell between the test's end and this line: the test did end
            pass
        if call_guard is not None:
            call_guard.reset()
    if changed and guarded and outcome.excinfo is None and hasattr(outcome, "force_exception"):
        outcome.force_exception(guard.ImpureCall(
            "torch's global state changed during the test: " + "; ".join(changed)
            + " (module.pure: a call leaves it as it found it; the kit restored it)"))
    if _random_profile():
        hypothesis_core.global_force_seed = _session_seed(item.config)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A test stopped by a guard (a hang: module.bounded; a side effect: module.pure) is a FAIL of the guard's
    clause, and its own clauses are not reached because of it (they were not judged). After a hang, every later test
    of the implementation is not reached (``pytest_runtest_setup``)."""
    outcome = yield
    report = outcome.get_result()
    found = guard.kit_clause(call.excinfo.value) if call.excinfo is not None else None
    if found is None:
        return
    clause, exc = found
    props = dict(report.user_properties)
    own = tuple(c for c in props.get("clauses", ()) if c != clause)
    report.user_properties = [(k, v) for k, v in report.user_properties if k not in ("clauses", "blocked", "own")]
    report.user_properties += [("clauses", (clause,)), ("own", {clause: ()}), ("blocked", own),
                               ("kit_message", f"{type(exc).__name__}: {exc}")]
    if isinstance(exc, guard.ModelHung) and HUNG not in item.config.stash:
        item.config.stash[HUNG] = str(exc)


def _seed_line(config: pytest.Config) -> str:
    if not _random_profile():
        return "hypothesis seed: derandomized (profile ci)"
    seed = _session_seed(config)
    return f"hypothesis seed: {seed} (replay: --hypothesis-seed={seed}; per-test seeds derive from it)"


VERDICT = pytest.StashKey[verdict.Verdict]()
#: ``--compile``: a test's deadline is this many times ``--test-timeout`` (the watchdog never counts time spent in
#: dynamo or inductor against a call: ``reference.kit.guard``).
COMPILE_TIMEOUT_FACTOR = 10


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run's exit status is the verdict's (``reference.kit.verdict``): pytest's, but ``NOT_JUDGED`` (6) when no
    test failed and yet a contract clause the selection covers got no verdict (unless ``--accept-unjudged``)."""
    config = session.config
    card = config.stash.get(CARD, None)
    if card is None or hasattr(config, "workerinput") or not set(card.records) - {"kit"}:
        return
    config.stash[VERDICT] = decided = verdict.decide(card, int(exitstatus),
                                                     accept_unjudged=config.getoption("--accept-unjudged"))
    if decided.exit_status != int(exitstatus):
        session.exitstatus = decided.exit_status


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if exitstatus == pytest.ExitCode.TESTS_FAILED:
        terminalreporter.write_line(f"{_seed_line(config)}; profile {_profile_name()}")
    card = config.stash.get(CARD, None)
    if card is None or hasattr(config, "workerinput") or not set(card.records) - {"kit"}:
        return
    terminalreporter.section("conformance card")
    decided = config.stash.get(VERDICT, None) or verdict.decide(card, int(exitstatus))
    for line in decided.card_lines(card):
        terminalreporter.write_line(line)
    for line in decided.lines():
        terminalreporter.write_line(line)
    if config.getoption("--card-json"):
        card.write(config.getoption("--card-json"), follows=decided.follows, verdict=decided.to_json())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Feed the conformance card (in the controller under xdist: the clause ids travel in user_properties)."""
    clauses = dict(report.user_properties).get("clauses")
    card = _CARD_OF_SESSION[0]
    if not clauses or card is None:
        return
    own = dict(report.user_properties).get("own", ())
    if report.when == "call" and report.passed and not hasattr(report, "wasxfail"):
        card.add(clauses, report.nodeid, "passed", own=own)
    elif report.when == "call" and report.passed:  # an accepted failure (--xfails-file) that now passes
        card.add(clauses, report.nodeid, "xpassed", own=own)
    elif report.failed:
        props = dict(report.user_properties)
        card.add(clauses, report.nodeid, "failed", props.get("kit_message") or one_line(report.longrepr), own=own)
        if props.get("blocked"):
            card.add(props["blocked"], report.nodeid, "skipped",
                     f"{NOT_REACHED} {clauses[0]}: {props.get('kit_message', '')}")
    elif report.skipped and hasattr(report, "wasxfail"):
        card.add(clauses, report.nodeid, "xfailed", own=own)
    elif report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        card.add(clauses, report.nodeid, "skipped", reason.removeprefix("Skipped: "), own=own)


_CARD_OF_SESSION: list[Card | None] = [None]


def pytest_sessionstart(session: pytest.Session) -> None:
    _CARD_OF_SESSION[0] = session.config.stash.get(CARD, None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that needs the implementation is not reached while an API deviation nothing maps stands in its way
    (the API diagnosis test itself runs and names it)."""
    diag = item.config.stash.get(DIAGNOSIS, None)
    if diag is None or "impl" not in getattr(item, "fixturenames", ()) or item.name.startswith("test_api_diagnosis"):
        return
    if HUNG in item.config.stash:
        pytest.skip(f"{NOT_REACHED} {guard.BOUNDED}: {item.config.stash[HUNG]}")
    reason = diag.not_reached_reason()
    if reason and not (item.get_closest_marker("blackbox") and diag.blackbox_reachable()):
        pytest.skip(reason)


def pytest_report_header(config: pytest.Config) -> str:
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    diag = config.stash.get(DIAGNOSIS, None)
    api = "\n".join(diag.lines()) + "\n" if diag is not None and diag.findings else ""
    return api + (f"scratch-transformer: impl={config.getoption('--impl')}, torch {torch.__version__}, cuda: {cuda}, "
            f"hypothesis profile: {_profile_name()}, {_seed_line(config)}, "
            f"strict tier: {'on' if strict_tier(config) else 'off'}, compile: {contract.compile_backend() or 'no'}, "
            f"variant: {variants.variant()}"
            + ("" if torch.cuda.is_available() or config.getoption("--device") != "all" else
               "\nscratch-transformer: no CUDA device, so device-parametrised tests are generated for cpu only "
               "(--device cuda collects their CUDA cases, as skips)"))


def strict_tier(config: pytest.Config) -> bool:
    """Whether the strict tier runs: always for this package, with ``--strict`` for any other implementation."""
    return config.getoption("--impl") == DEFAULT_IMPL or config.getoption("--strict-tier")


CUDA_LEFT_OUT = pytest.StashKey[int]()


#: Tests in the smoke tier whatever the kill matrix chose: the API diagnosis (one per clause it judges: a model that
#: cannot be built or hangs FAILs there), the purity check (module.pure) and every own-evidence test
#: (``@pytest.mark.own_evidence``, cheap properties: the tier's FAILs are attributed on evidence).
ALWAYS_SMOKE = ("tests/test_contract.py::test_api_diagnosis[", "tests/test_purity.py::")


def smoke_tests() -> frozenset[str]:
    """Node ids of the smoke tier (``-m smoke``), as the kill matrix recorded them."""
    import json

    try:
        return frozenset(json.loads(EXPECTED_KILLS.read_text()).get("smoke", {}))
    except (OSError, ValueError):
        return frozenset()


@pytest.hookimpl(tryfirst=True)  # before -m/-k deselect anything
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    smoke = smoke_tests()
    clause_map: dict[str, set[str]] = {}
    bad = []
    for item in items:
        if item.nodeid in smoke or item.nodeid.startswith(ALWAYS_SMOKE):
            item.add_marker(pytest.mark.smoke)
        named = tuple(dict.fromkeys(c for m in item.iter_markers("clause") for c in m.args))
        judged = clauses.judged_in(named, case_dtypes(item))
        if named and not judged:
            bad.append(f"{item.nodeid} (dtypes {sorted(case_dtypes(item))}) names {list(named)}")
        # the run counts the case for its own variant's residual clause only; the clause map (docs/clauses.md) keeps
        # every clause the test judges under some variant
        item.stash[CASE_CLAUSES] = variants.in_variant(judged)
        ids = clause_map.setdefault(item.nodeid.split("[")[0].replace("tests/", "", 1), set())
        ids.update(judged)
        if item.get_closest_marker("strict"):
            ids.add("@strict")
    if bad:
        raise pytest.UsageError("test cases that name no clause judging their dtype (reference/spec/clauses.toml "
                                "[dtypes]): " + "; ".join(bad))
    config.stash[COLLECTED_CLAUSES] = {k: sorted(v) for k, v in clause_map.items()}
    config.stash[COLLECTED_NODEIDS] = frozenset(item.nodeid for item in items)
    if CUDA_LEFT_OUT in config.stash:
        config.stash[CUDA_LEFT_OUT] = sum(1 for item in items if getattr(item, "callspec", None) is not None
                                          and item.callspec.params.get("device") == "cpu")
    for item in items:
        ids = item.stash[CASE_CLAUSES]
        if ids:
            item.user_properties.append(("clauses", ids))
            own = own_evidence(item, ids)
            if own:
                item.user_properties.append(("own", own))
                # own evidence is smoke too: a FAIL of the tier is attributed on evidence (reference.kit.verdict)
                item.add_marker(pytest.mark.smoke)
        # ``-k layer_norm``: the registry's name of every component the test's clauses judge
        item.extra_keyword_matches.update(name for c in ids for name in components.for_clause(c))
    _apply_xfails(config, items)
    _deselect_dtypes(config, items)
    _deselect_unavailable(config, items)
    _deselect_kit(config, items)
    _order(items, config)
    if not strict_tier(config):
        _skip_strict(config, items)


CASE_CLAUSES = pytest.StashKey[tuple]()


def own_evidence(item: pytest.Item, ids: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The clauses of ``ids`` the test judges on their own evidence, each with the clauses that evidence still relies
    on: ``@pytest.mark.own_evidence(*clauses, given=(...))`` on the test and on its parameters, their ``given``
    joined (no clause named: every one of ``ids``; ``given`` left out: none). ``reference.kit.verdict`` reads them."""
    own: dict[str, tuple[str, ...]] = {}
    for m in item.iter_markers("own_evidence"):
        given = tuple(m.kwargs.get("given", ()))
        for c in (m.args or ids):
            if c in ids:  # the markers of the test and of its parameters add up
                own[c] = tuple(dict.fromkeys(own.get(c, ()) + given))
    return own


def case_dtypes(item: pytest.Item) -> frozenset[str]:
    """The dtypes a test case runs in (``reference.spec.clauses.DTYPES`` names): from its parameters (a ``torch.dtype``;
    the low-precision lane's ``(dtype, tf32)``; ``autocast_dtype`` -> ``autocast``) and its ``dtypes`` marker.
    Empty for a case of no floating dtype of its own (structure, API, kit tests)."""
    found: set[str] = set()
    params = getattr(getattr(item, "callspec", None), "params", {})
    for name, value in params.items():
        if name == "autocast_dtype":
            found.add("autocast")
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], torch.dtype):
            found.add("tf32" if value[1] else str(value[0]).removeprefix("torch."))
        elif isinstance(value, torch.dtype) and value.is_floating_point:
            found.add(str(value).removeprefix("torch."))
    for marker in item.iter_markers("dtypes"):
        found.update(marker.args)
    return frozenset(found)


def selected_dtypes(config: pytest.Config) -> frozenset[str]:
    """``--dtypes``: the dtypes the kit judges (a ``UsageError`` names an unknown one)."""
    chosen = [d.strip() for d in config.getoption("--dtypes").split(",") if d.strip()]
    unknown = [d for d in chosen if d not in clauses.DTYPES]
    if unknown or not chosen:
        raise pytest.UsageError(f"--dtypes {config.getoption('--dtypes')!r}: unknown dtype(s) {unknown}; choose "
                                f"from {','.join(clauses.DTYPES)}")
    return frozenset(chosen)


def _deselect(config: pytest.Config, items: list[pytest.Item], drop: Callable[[pytest.Item], bool]) -> None:
    """Deselect (pytest's ``pytest_deselected``, as ``-m``/``-k`` do) every item ``drop`` says, in place."""
    keep, dropped = [], []
    for item in items:
        (dropped if drop(item) else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def _deselect_dtypes(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--dtypes``: deselect the cases that run only in dtypes not chosen (the card shows a clause that judges none
    of the chosen dtypes as "not run", naming ``--dtypes``)."""
    chosen = selected_dtypes(config)
    if chosen == frozenset(clauses.DTYPES):
        return
    _deselect(config, items, lambda item: bool(case_dtypes(item)) and not case_dtypes(item) & chosen)


def _deselect_unavailable(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without CUDA, the TF32 cases (TF32 matmuls exist only on CUDA) are deselected like the CUDA cases, not
    skipped: the card shows ``numerics.tf32`` "not run" with the reason, and the run is not "not judged" for it."""
    if torch.cuda.is_available():
        return
    _deselect(config, items, lambda item: case_dtypes(item) == {"tf32"})


def _deselect_kit(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--kit-tests deselect``: deselect the tests that judge only the kit itself (clause ``kit``), but for those in
    the smoke tier (the kill matrix chose them: the smoke tier keeps its sensitivity)."""
    if config.getoption("--kit-tests") != "deselect":
        return
    smoke = smoke_tests()
    _deselect(config, items, lambda item: set(item.stash[CASE_CLAUSES]) == {clauses.KIT} and item.nodeid not in smoke)


def _apply_xfails(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--xfails-file``: each line a node id (or prefix) or ``clause:<id>``; matching tests are xfail (not strict)."""
    path = config.getoption("--xfails-file")
    if not path:
        return
    entries = [ln.split("#", 1)[0].strip() for ln in Path(path).read_text().splitlines()]
    entries = [e for e in entries if e]
    for item in items:
        ids = dict(item.user_properties).get("clauses", ())
        hit = next((e for e in entries if (e.startswith("clause:") and e[7:] in ids) or item.nodeid.startswith(e)),
                   None)
        if hit:
            item.add_marker(pytest.mark.xfail(reason=f"accepted deviation ({path}: {hit})", strict=False))


#: The order in which clauses' tests run (issue 34: "a component's own tests run before the tests that merely exercise
#: it"): the API, then the components, masking, residuals, blocks, stacks, the model, then behaviour and numerics that
#: exercise all of them. A test runs at the rank of its latest clause; own-evidence tests first within a rank.
CLAUSE_ORDER = ("api.", "build.", "embed.", "pe.", "ln.", "ffn.", "mha.", "mask.", "residual.", "encoder.block",
                "decoder.block", "encoder.stack", "decoder.stack", "projection.", "transformer.", "dropout.",
                "module.state", "numerics.float", "numerics.", "module.", "model.", "extra.", "strict.", "kit")


def clause_rank(clause: str) -> int:
    return next((i for i, prefix in enumerate(CLAUSE_ORDER) if clause.startswith(prefix)), len(CLAUSE_ORDER))


def _order(items: list[pytest.Item], config: pytest.Config) -> None:
    """The contract checks first (``-x`` stops at the root cause: a missing class or a wrong signature). Under
    ``-x``/``--maxfail`` every test then runs by its clauses' rank (``CLAUSE_ORDER``), so the first failure is a
    component's own before a test that merely exercises it; otherwise the long-running ``slow`` tests come next (so
    ``-n 2`` starts them at once instead of waiting for them at the end), then the rest by rank."""
    first_failure = bool(config.getoption("maxfail", 0))

    def rank(item: pytest.Item) -> tuple[int, int, int]:
        if item.nodeid.startswith("tests/test_contract.py"):
            return (0, 0, 0)
        ids = item.stash.get(CASE_CLAUSES, ()) or ("kit",)
        slow = 0 if first_failure or not item.get_closest_marker("slow") else -1
        return (1 + slow, max(clause_rank(c) for c in ids), 0 if item.get_closest_marker("own_evidence") else 1)

    items.sort(key=rank)  # stable: pytest's order within a rank


def _skip_strict(config: pytest.Config, items: list[pytest.Item]) -> None:
    impl = config.getoption("--impl")
    for item in items:
        marker = item.get_closest_marker("strict")
        if marker is None:
            continue
        clause_ids = [c for m in item.iter_markers("clause") for c in m.args if c.startswith("strict.")]
        what = marker.args[0] if marker.args else "this package's own choice"
        item.add_marker(pytest.mark.skip(
            reason=f"beyond the contract ({', '.join(clause_ids) or 'strict'}): {what}; {DEFAULT_IMPL}'s own "
                   f"choice, not required of impl={impl} (--strict-tier runs it)"))


def pytest_report_collectionfinish(config: pytest.Config, start_path: Path, items: list[pytest.Item]) -> str:
    left_out = config.stash.get(CUDA_LEFT_OUT, None)
    if not left_out:
        return ""
    return (f"scratch-transformer: {left_out} CUDA cases left out (no CUDA device on this machine; "
            "--device cuda collects them as skips)")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """Under ``-n N`` the workers collect: the controller counts the left-out CUDA cases from the first one's ids."""
    import re

    config = node.config
    if CUDA_LEFT_OUT in config.stash or torch.cuda.is_available() or config.getoption("--device") != "all":
        return
    config.stash[CUDA_LEFT_OUT] = sum(1 for i in ids if re.search(r"\[(?:[^\]]*-)?cpu(?:-[^\]]*)?\]$", i))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and config.stash[CUDA_LEFT_OUT]:
        reporter.write_line(pytest_report_collectionfinish(config, config.rootpath, []))


@pytest.fixture(scope="session")
def strict(pytestconfig: pytest.Config) -> bool:
    """True when the strict tier runs (see ``strict_tier``): tests gate strict-only assertions on it."""
    return strict_tier(pytestconfig)


def _device_params(config: pytest.Config) -> list:
    chosen = config.getoption("--device")
    names = DEVICES if chosen == "all" else (chosen,)
    if chosen == "all" and not torch.cuda.is_available():
        names = ("cpu",)  # no CUDA case is generated (the header says so), rather than hundreds of skips
        config.stash[CUDA_LEFT_OUT] = 0  # counted after collection: one per cpu case
    params = []
    for name in names:
        marks = []
        if name == "cuda":
            marks = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason="CUDA is not available on this machine")]
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", _device_params(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def impl_name(pytestconfig: pytest.Config) -> str:
    """The dotted name of the implementation under test."""
    return pytestconfig.getoption("--impl")


@pytest.fixture(scope="session")
def impl_map_path(pytestconfig: pytest.Config) -> str | None:
    """The ``--impl-map`` file the run reads (None: no map)."""
    return pytestconfig.getoption("--impl-map")


@pytest.fixture(scope="session")
def impl(pytestconfig: pytest.Config) -> ModuleType:
    """The implementation module under test (reached only through the contract; through ``--impl-map`` or the
    diagnosis's proposed map when its names differ)."""
    return pytestconfig.stash[IMPL]


@pytest.fixture(scope="session")
def diagnosis(pytestconfig: pytest.Config) -> Diagnosis:
    """The API diagnosis of the implementation under test (``reference.kit.diagnose``)."""
    return pytestconfig.stash[DIAGNOSIS]
