"""Guards on every call into the implementation under test, each a finding of its own clause.

* **module.bounded**: a call returns within the watchdog's time and allocates within a cap. :class:`Watchdog`
  arms ``SIGALRM`` (``signal.setitimer``, the mechanism of ``pytest-timeout``'s ``signal`` method) for each call it
  is told of: the API diagnosis's build and forward, each outermost forward of an implementation module
  (:class:`CallGuard`'s global hooks) and each test as a whole. A call that overruns raises :class:`ModelHung`, a
  ``BaseException``, so neither the model's own ``except Exception`` nor Hypothesis swallows it. A hang in C code
  that no signal interrupts is left to ``faulthandler.dump_traceback_later`` (the plugin's backstop: the tracebacks
  are printed, the process exits non-zero). :func:`memory_cap` lowers ``RLIMIT_AS`` around the diagnosis's build,
  so a constructor that asks for tens of GB fails at once with an allocation error instead of being killed.
* **module.pure**: a call leaves its inputs and torch's global state as it found them. :class:`CallGuard` keeps a
  pristine copy of the tensor arguments of every outermost forward and compares them after the call
  (:class:`ImpureCall`: "modified its input ``args[0]`` in place"), so no reference is ever computed from a mutated
  input; :func:`snapshot` / :func:`restore` / :func:`changes` read and reset the global state (default dtype, grad
  mode, deterministic algorithms, matmul precision, anomaly mode) around an import and every test.

The exceptions carry their clause (``clause``): the suite's plugin files a test that raised one under that clause,
and the test's own clauses as not reached because of it (docs/clauses.md, "module.bounded and module.pure").
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import traceback
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

BOUNDED = "module.bounded"
PURE = "module.pure"
#: Default seconds one call into the implementation may take (``--call-timeout``): the kit's sizes are tiny (a
#: forward takes milliseconds; the slowest call measured in the not-slow tier is in docs/guide.md), so this is a
#: thousand-fold margin that still turns a hang into a verdict in seconds.
CALL_TIMEOUT = 10.0
#: Default seconds one test may take as a whole (``--test-timeout``): the backstop for a hang outside any module
#: forward (a constructor, ``encode``'s own code, a backward).
TEST_TIMEOUT = 120.0


class KitClauseError(AssertionError):
    """An assertion of a clause other than the test's own (``clause``): the test's own clauses were not judged."""

    clause = PURE


class ImpureCall(KitClauseError):
    """A call modified its inputs or torch's global state."""

    clause = PURE


class ModelHung(BaseException):  # noqa: N818: a verdict, not an error of the kit
    """A call into the implementation did not return in time (a ``BaseException``: the model's own ``except
    Exception`` and Hypothesis let it through)."""

    clause = BOUNDED


def kit_clause(exc: BaseException | None) -> tuple[str, BaseException] | None:
    """The (clause, exception) of the first guard exception in ``exc``, its group members, cause or context."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (KitClauseError, ModelHung)):
            return e.clause, e
        todo += [*getattr(e, "exceptions", ()), e.__cause__, e.__context__]
    return None


# ------------------------------------------------------------------------------------------------ the watchdog
class Watchdog:
    """Deadlines on calls, enforced by one ``SIGALRM`` timer set to the nearest; a no-op off the main thread or
    where the platform has no ``SIGALRM`` (then only the ``faulthandler`` backstop acts)."""

    def __init__(self) -> None:
        self._deadlines: dict[object, tuple[float, float, str]] = {}  # key -> (deadline, seconds, what)
        self.active = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        if self.active:
            signal.signal(signal.SIGALRM, self._fire)

    def push(self, key: object, seconds: float | None, what: str) -> None:
        if self.active and seconds and math.isfinite(seconds) and seconds > 0:
            self._deadlines[key] = (time.monotonic() + seconds, seconds, what)
            self._arm()

    def pop(self, key: object) -> None:
        if self._deadlines.pop(key, None) is not None:
            self._arm()

    def clear(self) -> None:
        self._deadlines.clear()
        self._arm()

    @contextlib.contextmanager
    def limit(self, seconds: float | None, what: str) -> Iterator[None]:
        """``with watchdog.limit(10, "build_transformer(...)")``: raise :class:`ModelHung` if the block overruns."""
        key = object()
        self.push(key, seconds, what)
        try:
            yield
        finally:
            self.pop(key)

    def _arm(self) -> None:
        if not self.active:
            return
        if not self._deadlines:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return
        nearest = min(d for d, _, _ in self._deadlines.values())
        signal.setitimer(signal.ITIMER_REAL, max(nearest - time.monotonic(), 1e-3))

    def _fire(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        due = [(d, s, w) for d, s, w in self._deadlines.values() if d <= now + 1e-3]
        if not due:
            self._arm()
            return
        if _compiling_frames(frame):  # torch.compile at work: its time is not the model's; give the call its time again
            self._deadlines = {k: (d + s if d <= now + 1e-3 else d, s, w) for k, (d, s, w) in self._deadlines.items()}
            self._arm()
            return
        _, seconds, what = min(due)
        self.clear()
        raise ModelHung(f"{what} did not return within {seconds:g} s (the watchdog: --call-timeout/--test-timeout)")


@contextlib.contextmanager
def backstop(seconds: float | None) -> Iterator[None]:
    """The last resort for a hang no signal interrupts (a deadlock or a long loop in C code): after ``seconds``,
    ``faulthandler`` prints every thread's traceback to stderr (where the run was) and ends the process with exit
    status 1. Cancelled when the block ends."""
    import faulthandler
    import sys

    if not seconds or not math.isfinite(seconds) or seconds <= 0:
        yield
        return
    try:
        faulthandler.dump_traceback_later(seconds, exit=True, file=sys.__stderr__)
    except (ValueError, OSError, AttributeError):  # no usable stderr (a pythonw), or faulthandler unavailable
        yield
        return
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


#: Seconds past a deadline before the ``backstop`` ends the process.
BACKSTOP_GRACE = 60.0

def _compiling_frames(frame: Any) -> bool:
    """Whether the interrupted stack is inside ``torch.compile``'s tracing or code generation (dynamo, inductor)."""
    while frame is not None:
        name = frame.f_code.co_filename
        if "torch/_dynamo/" in name or "torch/_inductor/" in name or "torch\\_dynamo\\" in name \
                or "torch\\_inductor\\" in name:
            return True
        frame = frame.f_back
    return False


WATCHDOG: Watchdog | None = None


def watchdog() -> Watchdog:
    """The process's watchdog (created on first use, on the thread that asks: the main one in the kit)."""
    global WATCHDOG
    if WATCHDOG is None:
        WATCHDOG = Watchdog()
    return WATCHDOG


# ------------------------------------------------------------------------------------------------ memory
#: Bytes beyond the process's address space at the diagnosis that its build and forward may map (the probe model
#: holds a few kB; a model that maps GBs at d_model=8 allocates far beyond what its config needs).
MEMORY_HEADROOM = 4 << 30


def _address_space() -> int | None:
    try:
        with open("/proc/self/status") as f:
            line = next(ln for ln in f if ln.startswith("VmSize:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return None


@contextlib.contextmanager
def memory_cap(headroom: int = MEMORY_HEADROOM) -> Iterator[None]:
    """Lower ``RLIMIT_AS`` to the current address space plus ``headroom`` for the block (Linux; elsewhere nothing):
    an allocation beyond it fails at once with an error the kit files under module.bounded."""
    try:
        import resource
    except ImportError:  # not POSIX
        yield
        return
    used = _address_space()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = None if used is None else used + headroom
    if cap is None or (hard != resource.RLIM_INFINITY and cap > hard) or (soft != resource.RLIM_INFINITY
                                                                           and cap > soft):
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def is_allocation_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator refusing memory (``MemoryError``, torch's "can't allocate memory")."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(s in text for s in (
        "can't allocate memory", "cannot allocate memory", "not enough memory", "out of memory",
        "failed to allocate"))


def held_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers ``module`` holds (each storage once)."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


# ------------------------------------------------------------------------------------------------ global state
@dataclass(frozen=True)
class GlobalState:
    """The parts of torch's global state a model has no business changing."""

    default_dtype: torch.dtype
    grad_enabled: bool
    deterministic_algorithms: bool
    deterministic_warn_only: bool
    float32_matmul_precision: str
    anomaly_detection: bool


_NAMES = {"default_dtype": "the default dtype (torch.set_default_dtype)",
          "grad_enabled": "grad mode (torch.set_grad_enabled)",
          "deterministic_algorithms": "deterministic algorithms (torch.use_deterministic_algorithms)",
          "deterministic_warn_only": "deterministic algorithms' warn_only",
          "float32_matmul_precision": "the float32 matmul precision (torch.set_float32_matmul_precision)",
          "anomaly_detection": "anomaly detection (torch.autograd.set_detect_anomaly)"}


def snapshot() -> GlobalState:
    return GlobalState(torch.get_default_dtype(), torch.is_grad_enabled(),
                       torch.are_deterministic_algorithms_enabled(),
                       torch.is_deterministic_algorithms_warn_only_enabled(),
                       torch.get_float32_matmul_precision(), torch.is_anomaly_enabled())


def restore(state: GlobalState) -> None:
    torch.set_default_dtype(state.default_dtype)
    torch.set_grad_enabled(state.grad_enabled)
    torch.use_deterministic_algorithms(state.deterministic_algorithms, warn_only=state.deterministic_warn_only)
    torch.set_float32_matmul_precision(state.float32_matmul_precision)
    torch.autograd.set_detect_anomaly(state.anomaly_detection)


@contextlib.contextmanager
def restored_state() -> Iterator[list[str]]:
    """Run the block, then put torch's global state back as it was; the yielded list receives, at the block's end
    (raised or not), each part the block changed (``changes``): ``with restored_state() as changed: ...``."""
    before = snapshot()
    changed: list[str] = []
    try:
        yield changed
    finally:
        changed += changes(before, snapshot())
        restore(before)


def changes(before: GlobalState, after: GlobalState) -> list[str]:
    """Each part of the global state that differs: "the default dtype (...): torch.float32 -> torch.float64"."""
    return [f"{_NAMES[f.name]}: {getattr(before, f.name)} -> {getattr(after, f.name)}"
            for f in fields(GlobalState) if getattr(before, f.name) != getattr(after, f.name)]


# ------------------------------------------------------------------------------------------------ call guard
def _compiling() -> bool:
    check: Callable[[], bool] | None = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if check is None:  # torch < 2.3
        check = torch._dynamo.is_compiling
    return check()


_PARAMETER_NAMES: dict[type, list[str]] = {}


def _tensors(module: nn.Module, args: tuple) -> list[tuple[str, torch.Tensor]]:
    """The positional tensor arguments of a forward call, each named by the forward's parameter (``x``, ``mask``)."""
    cls = type(module)
    if cls not in _PARAMETER_NAMES:
        import inspect
        try:
            params = list(inspect.signature(cls.forward).parameters.values())[1:]
            _PARAMETER_NAMES[cls] = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY,
                                                                           p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            _PARAMETER_NAMES[cls] = []
    names = _PARAMETER_NAMES[cls]
    return [(f"`{names[i]}`" if i < len(names) else f"args[{i}]", a) for i, a in enumerate(args)
            if isinstance(a, torch.Tensor)]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise the same values (NaN equal to NaN), dtype and shape."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return torch.equal(a, b)


class CallGuard:
    """Global forward hooks (``torch.nn.modules.module.register_module_forward_*hook``) on every outermost call of
    a module of ``types`` (the implementation's contract classes): the call's deadline (``call_timeout``) and its
    inputs' purity (positional tensor arguments compared with a copy taken before the call).

    Inside ``torch.compile`` (``--compile``) the hooks do nothing (they would break the graph); the per-test deadline
    still holds there."""

    def __init__(self, types: tuple[type, ...], call_timeout: float | None) -> None:
        self.types = types
        self.call_timeout = call_timeout
        self.depth = 0
        self._pristine: list[list[tuple[str, torch.Tensor, torch.Tensor | None, int]]] = []  # per call in flight
        self._handles: list[Any] = []

    def install(self) -> CallGuard:
        hooks = torch.nn.modules.module
        self._handles = [hooks.register_module_forward_pre_hook(self._pre),
                         hooks.register_module_forward_hook(self._post, always_call=True)]
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.reset()

    def reset(self) -> None:
        """Forget any call in flight (a test ended, or a ``ModelHung`` unwound the stack past the hooks)."""
        self.depth = 0
        self._pristine = []
        watchdog().pop(self)

    def _pre(self, module: nn.Module, args: tuple) -> None:
        if not isinstance(module, self.types) or _compiling():
            return
        self.depth += 1
        # a copy at the outermost call only (a nested call's write moves its input's version counter, which names
        # the innermost module that wrote; copying at every depth doubled the cost of a forward at the kit's sizes)
        with torch.no_grad():
            self._pristine.append([(name, t, t.detach().clone() if self.depth == 1 else None, t._version)
                                   for name, t in _tensors(module, args)])
        if self.depth == 1:
            watchdog().push(self, self.call_timeout, f"{type(module).__name__}.forward")

    def _post(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not isinstance(module, self.types) or _compiling() or self.depth == 0:
            return
        self.depth -= 1
        pristine = self._pristine.pop() if self._pristine else []
        if self.depth == 0:
            watchdog().pop(self)
        if output is None:  # the forward raised (torch calls always-call hooks with None): the error stands
            return
        changed = [name for name, t, copy, version in pristine
                   if (copy is not None and not same(t.detach(), copy)) or (copy is None and t._version != version)]
        if changed:
            raise ImpureCall(f"{type(module).__name__}.forward modified its input {', '.join(changed)} in place "
                             "(module.pure: a call leaves its inputs unchanged; the kit's references are computed "
                             "from copies taken before the call)")
        written = [f"{name} ({t._version - version} in-place write(s))" for name, t, _, version in pristine
                   if t._version != version]
        if written:  # the values came back (a mask inverted and inverted back), but the caller's tensor was written
            raise ImpureCall(f"{type(module).__name__}.forward wrote into its input {', '.join(written)} in place; "
                             "its values are the same after the call, but a caller's tensor is not the model's to "
                             "write (module.pure: an integer mask would come back 0/1; a tensor shared meanwhile is "
                             "wrong)")


def where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback outside torch and the kit (the user's line)."""
    skip = (str(Path(torch.__file__).parent), str(Path(__file__).resolve().parents[1]), "<frozen ", "importlib")
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not f.filename.startswith(skip)] or frames
    if not mine:
        return "(no traceback)"
    f = mine[-1]
    return f"{f.filename}:{f.lineno}" + (f" (`{f.line.strip()}`)" if f.line else "")
