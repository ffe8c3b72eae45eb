"""The fault-injection table (issue 32): each case, the command that judges it, and the verdict the kit must give.

A case runs one command in a fresh process from the repository root (``CI=true``, stdin closed): the smoke tier
(``python -m pytest -p no:cacheprovider -m smoke --impl MODULE ...``) or the equivalence report (``python -m
reference.report --impl MODULE --device cpu``). Its verdict is the exit status and the *first informative message*
(``first_message``), which must match the case's regex. The target exit statuses:

* 0 every clause judged and passed;
* 1 a clause FAILed (a test failed);
* 2 the module could not be imported (``sys.exit`` at import included: the message names the module and says it
  exited at import);
* 4 a usage error (a bad ``--impl-map``, an unwritable ``--card-json``, a missing ``--xfails-file``, ``--device cuda``
  without a GPU);
* 6 not judged: nothing failed, but a contract clause the selection covers got no verdict.

Several targets do not hold yet (docs/measurements/faults-before-issue-32.md is the table of what the kit did before
issue 32). A case that hangs is killed after its ``timeout_s`` (the whole process group) and gets exit status
``KILLED`` with the message ``(killed after N s) <its last output line>``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PACKAGE = __name__.rsplit(".", 1)[0]  # tests.faults
#: The two commands a case can run.
SMOKE, REPORT = "smoke", "report"
#: Exit statuses (the targets, module docstring).
PASSED, FAILED, IMPORT_ERROR, USAGE_ERROR, NOT_JUDGED = 0, 1, 2, 4, 6
#: The exit status recorded for a command killed at its timeout (as coreutils' ``timeout``).
KILLED = 124
#: Default per-case wall-clock limit, seconds; the hang cases must be judged within ``HANG_LIMIT_S``.
TIMEOUT_S = 120
HANG_LIMIT_S = 60
#: Environment variables of the calling process that would change the child's verdict: the kit's own settings
#: (``SCRATCH_TRANSFORMER_IMPL``, ``..._IMPL_MAP``, ``..._DTYPES``, ...), Hypothesis' profile, pytest's.
_DROPPED_ENV = ("SCRATCH_TRANSFORMER_", "HYPOTHESIS_PROFILE", "PYTEST_", "PYTHONPATH")


@dataclass(frozen=True)
class Case:
    """One fault: the module under test, extra options, the command, and the target verdict."""

    id: str
    module: str
    expected_exit: int
    message: str  # regex (re.search) the first informative message must match
    args: tuple[str, ...] = ()
    kind: str = SMOKE
    timeout_s: int = TIMEOUT_S

    def command(self, python: str = sys.executable) -> list[str]:
        """The argv that judges this case (run from the repository root)."""
        if self.kind == SMOKE:
            return [python, "-m", "pytest", "-p", "no:cacheprovider", "-m", "smoke", "--impl", self.module,
                    *self.args]
        return [python, "-m", "reference.report", "--impl", self.module, "--device", "cpu", "--no-progress",
                *self.args]

    def shown(self) -> str:
        """The command as a person types it (``python``, paths relative to the repository root)."""
        return " ".join(["python", *self.command()[1:]])


def _fault(name: str) -> str:
    return f"{PACKAGE}.{name}"


def _map(name: str) -> str:
    return str((HERE / f"{name}.map.toml").relative_to(ROOT))


CORRECT = "scratch_transformer"
#: A structure failure: the clause, the exception and where the implementation raised it (``file.py:LINE``).
_BUILD = r"FAIL\s+build\.structure\b(?=.*{exc})(?=.*\.py\b[^:]*:\d+)"  # model.py:41, or a control's "model.py [m]:41"
_PURE = r"FAIL\s+module\.pure\b.*"
_BOUNDED = r"FAIL\s+module\.bounded\b.*did not return within"
#: The module named, and that it exited at import.
_EXITED = r"(?=.*tests\.faults\.exit_at_import)(?=.*\bexit)(?=.*\bimport)"

CASES: tuple[Case, ...] = (
    # Controls: the correct model passes both commands.
    Case("correct", CORRECT, PASSED, r"\bpassed\b"),
    Case("report_correct", CORRECT, PASSED, r"all PASS", kind=REPORT),
    # The implementation cannot be built.
    Case("ctor_not_implemented", _fault("ctor_not_implemented"), FAILED, _BUILD.format(exc="NotImplementedError")),
    Case("ctor_typo", _fault("ctor_typo"), FAILED, _BUILD.format(exc=r"AttributeError.*\bheads\b")),
    Case("ctor_huge_buffer", _fault("ctor_huge_buffer"), FAILED,
         r"FAIL\s+module\.bounded\b(?=.*RuntimeError)(?=.*\.py\b[^:]*:\d+)(?=.*allocate)"),
    Case("report_ctor_not_implemented", _fault("ctor_not_implemented"), FAILED, r"^FAIL\b.*NotImplementedError",
         kind=REPORT),
    # Wrong state, values, types and shapes.
    Case("pe_plain_attribute", _fault("pe_plain_attribute"), FAILED,
         r"FAIL\s+api\.attributes\b.*`PositionalEncoding\.pe` is a Tensor.*register_buffer"),
    # Accepting the diagnosis leaves the clauses it stops without a verdict: not green (6), unless accepted too.
    Case("unjudged_after_xfail", _fault("pe_plain_attribute"), NOT_JUDGED, r"not judged",
         args=("--xfails-file", "tests/faults/accept_api_attributes.xfails")),
    Case("unjudged_accepted", _fault("pe_plain_attribute"), PASSED, r"accepted by --accept-unjudged",
         args=("--xfails-file", "tests/faults/accept_api_attributes.xfails", "--accept-unjudged")),
    Case("returns_nan", _fault("returns_nan"), FAILED, r"FAIL\s+\S+.*\b(nan|NaN|non-finite|finite)\b"),
    Case("report_returns_nan", _fault("returns_nan"), FAILED, r"^FAIL\b.*\b(nan|NaN|non-finite|finite)\b",
         kind=REPORT),
    Case("attn_wrong_shape", _fault("attn_wrong_shape"), FAILED, r"FAIL\s+mha\.formula\b.*\boutput shape\b"),
    Case("attn_returns_tuple", _fault("attn_returns_tuple"), FAILED, r"FAIL\s+mha\.formula\b.*\btuple\b"),
    Case("attn_no_weights", _fault("attn_no_weights"), FAILED, r"FAIL\s+mha\.static-attention\b.*\battention_scores\b"),
    # The process itself: exit at import, hangs.
    Case("exit_at_import", _fault("exit_at_import"), IMPORT_ERROR, _EXITED),
    Case("report_exit_at_import", _fault("exit_at_import"), IMPORT_ERROR, _EXITED, kind=REPORT),
    Case("hang_forward", _fault("hang_forward"), FAILED, _BOUNDED, timeout_s=HANG_LIMIT_S),
    Case("hang_build", _fault("hang_build"), FAILED, _BOUNDED, timeout_s=HANG_LIMIT_S),
    Case("hang_in_a_test", _fault("hang_long_sequences"), FAILED,
         r"FAIL\s+module\.bounded\b.*MultiHeadAttentionBlock\.forward did not return within",
         timeout_s=HANG_LIMIT_S),
    Case("report_hang_forward", _fault("hang_forward"), FAILED, r"did not return within", kind=REPORT,
         timeout_s=HANG_LIMIT_S),
    # Side effects on the caller: its tensors, torch's global state.
    Case("residual_inplace", _fault("residual_inplace"), FAILED, _PURE + r"\bin place\b"),
    Case("attn_mutates_mask", _fault("attn_mutates_mask"), FAILED, _PURE + r"\bin place\b"),
    Case("default_dtype_at_import", _fault("default_dtype_at_import"), FAILED, _PURE + r"default[_ ]dtype"),
    Case("default_dtype_in_forward", _fault("default_dtype_in_forward"), FAILED,
         _PURE + r"probe model changed the default dtype"),
    Case("report_default_dtype_in_forward", _fault("default_dtype_in_forward"), FAILED,
         r"^FAIL\b.*module\.pure: the row changed torch's global state: the default dtype", kind=REPORT),
    Case("grad_disabled_at_import", _fault("grad_disabled_at_import"), FAILED,
         _PURE + r"(grad[_ ]enabled|grad mode|autograd)"),
    Case("seed_every_forward", _fault("seed_every_forward"), FAILED,
         _PURE + r"(manual_seed|random (number )?(generator|state)|\bRNG\b|seed)"),
    # Bad kit inputs, on the correct model.
    Case("map_missing_class", CORRECT, USAGE_ERROR, r"map_missing_class\.map\.toml:3\b.*NoSuchAttentionBlock",
         args=("--impl-map", _map("map_missing_class"))),
    Case("map_missing_attribute", CORRECT, USAGE_ERROR, r"map_missing_attribute\.map\.toml:3\b.*no_such_linear",
         args=("--impl-map", _map("map_missing_attribute"))),
    Case("map_classes_not_table", CORRECT, USAGE_ERROR, r"map_classes_not_table\.map\.toml:2\b.*\bclasses\b",
         args=("--impl-map", _map("map_classes_not_table"))),
    Case("card_json_unwritable", CORRECT, USAGE_ERROR, r"--card-json\b.*/nonexistent/dir/card\.json",
         args=("--card-json", "/nonexistent/dir/card.json")),
    Case("xfails_file_missing", CORRECT, USAGE_ERROR, r"--xfails-file\b.*no_such_xfails\.txt",
         args=("--xfails-file", "tests/faults/no_such_xfails.txt")),
    Case("device_cuda_without_gpu", _fault("returns_nan"), USAGE_ERROR, r"--device cuda\b.*\b(CUDA|GPU)\b",
         args=("--device", "cuda")),
)
BY_ID = {case.id: case for case in CASES}


@dataclass(frozen=True)
class Outcome:
    """What one run of a case gave: exit status (``KILLED`` at the timeout), its output, the wall time."""

    exit: int
    stdout: str
    stderr: str
    wall_s: float
    killed_after_s: int | None = None

    def message(self, kind: str) -> str:
        first = first_message(kind, self.stdout, self.stderr)
        if self.killed_after_s is not None:
            return f"(killed after {self.killed_after_s} s) {first}".rstrip()
        return first


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def first_message(kind: str, stdout: str, stderr: str) -> str:
    """The first informative message of a run: the one line a person reads for its verdict.

    Smoke (pytest): the first ``  FAIL`` line of the conformance card printed at the end (the section after
    ``conformance card for ...:``); else the verdict's line (``verdict: exit 6 (not judged) ...``); else the first line of stderr, then stdout, starting ``ERROR:`` or naming a
    ``UsageError``; else the last ``INTERNALERROR>`` line (a crash of the kit's plugin: its exception); else the
    first ``Exit:`` or ``!!!`` line (``pytest.exit``, an interrupted session); else the last non-empty line of
    stderr, else of stdout (pytest's ``=`` and ``!`` banners stripped).

    Report: its first ``FAIL`` line (the findings after the table); else the card's first ``  FAIL`` line; else
    stderr's last non-empty line; else the summary line (``N rows ...``), else stdout's last non-empty line.
    Leading and trailing blanks are stripped; ``(no output)`` when there is none.
    """
    out, err = _lines(stdout), _lines(stderr)

    def card_fail(lines: list[str]) -> str | None:
        start = next((i for i, line in enumerate(lines) if line.startswith("conformance card for ")), None)
        if start is None:
            return None
        return next((line for line in lines[start + 1:] if line.startswith("  FAIL")), None)

    def first(lines: list[str], pattern: str) -> str | None:
        return next((line for line in lines if re.search(pattern, line)), None)

    if kind == REPORT:
        found = first(out, r"^FAIL\b") or card_fail(out) or (err[-1] if err else None) or first(out, r"^\d+ rows\b")
    else:
        internal = [line for line in err + out if line.startswith("INTERNALERROR>")]
        found = (card_fail(out) or first(out, r"^verdict:") or first(err + out, r"^ERROR:|UsageError") or (internal[-1] if internal else None)
                 or first(err + out, r"^Exit:|^!!!") or (err[-1] if err else None))
    return (found or (out[-1] if out else "")).strip().strip("=!").strip() or "(no output)"


def environment() -> dict[str, str]:
    """The child's environment: this one without the kit's, Hypothesis' and pytest's settings, with ``CI=true``
    (the deterministic profile), unbuffered output (a killed run keeps what it printed) and a terminal width wide
    enough that Rich (the report's stderr) does not wrap a message over several lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV)}
    env.update(CI="true", PYTHONUNBUFFERED="1", COLUMNS="400")
    return env


def run(case: Case, python: str = sys.executable) -> Outcome:
    """Run ``case``'s command in its own process group; at ``case.timeout_s`` kill the whole group (pytest-xdist
    workers, anything the fault started) and record ``KILLED``."""
    start = time.perf_counter()
    proc = subprocess.Popen(case.command(python), cwd=ROOT, env=environment(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=case.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this call created (start_new_session), nothing else
        stdout, stderr = proc.communicate()
        return Outcome(KILLED, stdout, stderr, time.perf_counter() - start, killed_after_s=case.timeout_s)
    return Outcome(proc.returncode, stdout, stderr, time.perf_counter() - start)
