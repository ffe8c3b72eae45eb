"""The sweep: every selected report row x config x device x dtype, its results, their JSON and their card.

Rows are named ``<component>`` or ``<component>/<variant>`` (forward) and ``grad/<component>`` (gradients), with the
registry's snake_case component names; each row's clauses come from the registry (``components.REPORT_CLAUSES``).
"""

from __future__ import annotations

import fnmatch
import math
import platform
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np
import torch

from reference.spec import contract
from reference.kit.card import Card
from reference.spec import variants
from reference.spec.clauses import judged_in
from reference.spec.variants import DEFAULT_VARIANT, in_variant
from reference.oracles.numpy_ref import StructureMismatch
from reference.kit.components import BY_CONTRACT, REPORT_CLAUSES
from reference.kit import guard, verdict
from reference.kit.load import contract_types, declared, diagnosis_of, load_impl
from reference.kit.findings import Diagnosis
from reference.report.localize import WEIGHTS_SUFFIX, Localization, jsonable
from reference.spec.clauses import GIVEN
from . import forward, gradients
from .cases import CONFIGS, Config, Ctx, Outcome, case_seed

SCHEMA = "scratch-transformer-report/1"
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
NUMERICS = {"float64": "numerics.float64", "float32": "numerics.float32", "float16": "numerics.16bit-accuracy",
            "bfloat16": "numerics.16bit-accuracy"}
#: The error prefix of a run whose model holds another architecture than its constructor call asked for.
STRUCTURE_MISMATCH = "raised StructureMismatch"
MHA_KINDS = ("none", "causal", "key_padding", "random", "cross", "large")
#: Attention rows without a mask: their evidence on the attention formula relies on no masking clause (the masked
#: rows' masking clauses rely on the formula, ``clauses.toml [given]``).
UNMASKED_ATTENTION = ("multi_head_attention/none",)

#: Every row of the sweep, in the order of the table.
COMPONENTS: dict[str, Callable[[Ctx], Outcome]] = {
    "causal_mask": forward.run_causal_mask,
    "padding_mask": forward.run_padding_mask,
    "embedding": forward.run_embedding,
    "positional_encoding": forward.run_positional_encoding,
    "layer_norm": forward.run_layer_norm,
    "layer_norm/offset": forward.run_layer_norm_offset,
    "feed_forward": forward.run_feed_forward,
    **{f"multi_head_attention/{kind}": forward.make_run_mha(kind) for kind in MHA_KINDS},
    "encoder_block": forward.run_encoder_block,
    "decoder_block": forward.run_decoder_block,
    "encoder": forward.run_encoder,
    "decoder": forward.run_decoder,
    "transformer": forward.run_transformer,
    "grad/layer_norm": gradients.run_grad_layer_norm,
    "grad/feed_forward": gradients.run_grad_feed_forward,
    "grad/multi_head_attention": gradients.run_grad_multi_head_attention,
    "grad/transformer": gradients.run_grad_transformer,
}
#: Row names of report version 1 (before the registry), still accepted by ``--component``: exact names, families
#: and globs (``mha``, ``mha/causal``, ``mha/*``, ``masks``, ``grad/mha``) are rewritten to the registry's names.
V1_NAMES = (("masks/causal", "causal_mask"), ("masks/padding", "padding_mask"), ("masks", "*_mask"),
            ("positions", "positional_encoding"), ("grad/mha", "grad/multi_head_attention"),
            ("mha", "multi_head_attention"))


def _from_v1(pattern: str) -> str:
    """``pattern`` with a version 1 row name (or family) at its start replaced by the registry's."""
    for old, new in V1_NAMES:
        if pattern == old or pattern.startswith(old + "/"):
            return new + pattern[len(old):]
    return pattern


assert set(COMPONENTS) == set(REPORT_CLAUSES), "every report row needs its clauses in the registry"


@dataclass
class Result:
    """One (component, config, device, dtype) run."""

    component: str
    config: str
    device: str
    dtype: str
    outcome: Outcome | None
    error: str = ""  # the exception text when the run raised
    seconds: float = 0.0
    structure_at: str = ""  # a StructureMismatch's contract path (the stack that holds another N than asked)

    @property
    def passed(self) -> bool:
        return self.outcome is not None and self.outcome.ok

    @property
    def margin(self) -> float:
        return math.inf if self.outcome is None else self.outcome.verdict.margin

    def to_json(self) -> dict[str, Any]:
        """Strict JSON data (non-finite numbers as the strings "inf", "-inf", "nan")."""
        v = self.outcome.verdict if self.outcome else None
        loc = self.outcome.localization if self.outcome else None
        return jsonable({
            "component": self.component, "config": self.config, "device": self.device, "dtype": self.dtype,
            "passed": self.passed, "skipped": bool(self.outcome and self.outcome.skipped),
            "max_abs": v.max_abs if v else None, "max_rel": v.max_rel if v else None,
            "torch_abs": v.torch_abs if v else None, "ratio": v.ratio if v else None,
            "rule": v.rule if v else None, "tolerance": v.tolerance if v else None,
            "allowed": v.allowed if v else None, "margin": v.margin if v else None,
            "detail": self.outcome.detail if self.outcome else self.error,
            "first_divergence": loc.first_divergence if loc else None, "seconds": round(self.seconds, 4)})


def select_components(patterns: Sequence[str] | None) -> list[str]:
    """Row names matching any pattern, in table order: an exact name selects just that row; otherwise a family
    prefix (``multi_head_attention`` -> ``multi_head_attention/*``) or a glob (``grad/*``). Version 1 names
    (``V1_NAMES``: ``mha``, ``mha/causal``, ``positions``, ``masks``, ...) are accepted."""
    if not patterns:
        return list(COMPONENTS)
    patterns = [_from_v1(p) for p in patterns]

    def matches(name: str, p: str) -> bool:
        if p in COMPONENTS:
            return name == p
        return name.startswith(p.rstrip("/") + "/") or fnmatch.fnmatch(name, p)

    chosen = [name for name in COMPONENTS if any(matches(name, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"no component matches {', '.join(patterns)}; known: {', '.join(COMPONENTS)}")
    return chosen


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def run_one(impl: ModuleType, component: str, config: Config, device: str, dtype: torch.dtype,
            seed: int, row_timeout: float | None = None) -> Result:
    """One component run; an exception becomes a FAIL result carrying its text, and so does a run past
    ``row_timeout`` seconds or a module forward past the call guard's time (module.bounded)."""
    s = case_seed(seed, component, config)
    ctx = Ctx(impl, config, device, dtype, s, np.random.default_rng(s))
    start, at = time.perf_counter(), ""
    with guard.restored_state() as changed:  # one row's side effect cannot poison the rows that follow
        try:
            with guard.watchdog().limit(row_timeout, f"the report row {component} {config.name} {device} "
                                                     f"{dtype_name(dtype)}"):
                outcome, error = COMPONENTS[component](ctx), ""
        except guard.ModelHung as exc:  # a verdict of module.bounded; the sweep reaches no later row
            outcome, error = None, f"{guard.BOUNDED}: {exc}"
        except guard.KitClauseError as exc:  # a side effect (module.pure): the row's own clauses are not judged
            outcome, error = None, f"{exc.clause}: {exc}"
        except StructureMismatch as exc:  # another architecture than asked: build.structure's to judge, not this row's
            outcome, error = None, f"{STRUCTURE_MISMATCH}: {exc}"
            at = getattr(exc, "path", "")
        except Exception as exc:  # a broken implementation may raise anywhere: that is a FAIL, not a crash
            outcome, error = None, f"raised {type(exc).__name__}: {exc}"
    if changed and not error:
        outcome, error = None, (f"{guard.PURE}: the row changed torch's global state: " + "; ".join(changed)
                                + " (a call leaves it as it found it; the report restored it)")
    return Result(component, config.name, device, dtype_name(dtype), outcome, error, time.perf_counter() - start,
                  at)


@dataclass
class Report:
    """All results of one sweep, and how to reproduce each."""

    impl: str
    seed: int
    devices: list[str]
    dtypes: dict[str, list[str]]  # device -> dtype names
    components: list[str]
    results: list[Result]
    elapsed: float = 0.0
    diagnosis: Diagnosis | None = None  # the API diagnosis of the implementation (its deviations go on the card)
    impl_map: str | None = None  # the --impl-map the implementation was seen through
    compile: str | None = None  # the torch.compile backend every module was built with (None: eager)
    threads: int = 1  # torch CPU threads of the sweep (CPU sums may round differently with more)
    variant: str = DEFAULT_VARIANT  # the declared variant the references followed (``--variant``)

    @property
    def faults(self) -> list[str]:
        """The diagnosis's findings of the model's own faults (module.bounded, module.pure): FAILs of the report."""
        return [f"{f.clause}: {f.message}" for f in (self.diagnosis.findings if self.diagnosis else ())
                if f.clause.startswith("module.")]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results) and not self.faults

    @property
    def localizations(self) -> list[tuple[Result, Localization]]:
        return [(r, r.outcome.localization) for r in self.results if r.outcome and r.outcome.localization]

    @property
    def first_divergence(self) -> str | None:
        found = next((loc.first_divergence for _, loc in self.localizations if not loc.ok), None)
        # a stack of another architecture than asked is not localised (not reached): name the stack
        return found or next((r.structure_at for r in self.results if r.structure_at), None)

    def rows(self) -> list[list[Result]]:
        """Results grouped by (component, device, dtype), in sweep order."""
        groups: dict[tuple[str, str, str], list[Result]] = {}
        for r in self.results:
            groups.setdefault((r.component, r.device, r.dtype), []).append(r)
        return list(groups.values())

    def command(self, component: str, device: str, dtype: str) -> str:
        """The command line that reproduces one row: every option that changes its numbers (the implementation and
        its map, the declared variant, the row, the seed, compilation, CPU threads)."""
        words = ["python", "-m", "reference.report", "--impl", self.impl]
        words += ["--impl-map", self.impl_map] if self.impl_map is not None else []
        words += ["--variant", self.variant] if self.variant != DEFAULT_VARIANT else []
        words += ["--component", component, "--device", device, "--dtype", dtype, "--seed", str(self.seed)]
        words += ["--compile", self.compile] if self.compile else []
        words += ["--threads", str(self.threads)] if self.threads != 1 else []
        return shlex.join(words)

    def card(self) -> Card:
        """The conformance card of this sweep: each run counted against its row's clauses and its dtype's
        ``numerics.*`` clause, plus the API diagnosis's deviations (``reference.kit.card``)."""
        card = Card(self.impl, variant=self.variant)
        for f in self.diagnosis.findings if self.diagnosis else ():
            if f.clause.startswith("module."):  # the model's own fault: a FAIL, never a deviation a map accepts
                card.add((f.clause,), "the API diagnosis", "failed", f.message)
            else:
                card.deviation(f.clause, f.message)
        for r in self.results:
            # a 16-bit row counts for its numerics clause only (clauses.toml [dtypes]), as the tests' cases do
            clauses = in_variant(judged_in(REPORT_CLAUSES.get(r.component, ()) + (NUMERICS[r.dtype],), {r.dtype}),
                                 self.variant)
            if r.error.startswith(STRUCTURE_MISMATCH):  # the row's own clauses are not reached: build.structure fails
                clauses = ("build.structure",)
            where = f"{r.component} ({r.device}, {r.dtype}, config {r.config})"
            if r.error.startswith((guard.BOUNDED, guard.PURE)):  # a hang or a side effect: its clause FAILs, the
                card.add((r.error.split(":", 1)[0],), where, "failed", r.error)  # row's own are not reached
                card.add(clauses, where, "skipped", f"not reached because of {r.error}")
            elif r.error.startswith("not reached because of"):
                card.add(clauses, where, "skipped", r.error)
            elif r.outcome is not None and r.outcome.skipped:
                card.add(clauses, where, "skipped", r.outcome.detail)
            elif r.passed:
                card.add(clauses, where, "passed", own=self._explained(r, clauses))
            else:
                v = r.outcome.verdict if r.outcome else None
                card.add(clauses, where, "failed", r.error or (v.line() if v else ""), own=self._explained(r, clauses))
                self._add_roots(card, r, where)
        return card

    def _class_clauses(self, loc: Localization, path: str) -> tuple[str, ...]:
        """The clauses of the contract class at ``path`` in this variant (none for a class the registry lacks)."""
        kind = loc.kind(path)
        return in_variant(BY_CONTRACT[kind].clauses, self.variant) if kind in BY_CONTRACT else ()

    def _root_clauses(self, loc: Localization, path: str) -> tuple[str, ...]:
        """The clause a confirmed root at ``path`` counts against: its class's first clause in this variant
        (``encoder.stack`` for an ``Encoder`` that skips its norm); for an attention block only a wrong
        ``attention_scores`` under a right output (``mha.static-attention``): its output formula and masking are
        judged by its own rows, which separate them."""
        if loc.kind(path) == "MultiHeadAttentionBlock":
            out, weights = loc.row(path), loc.row(path + WEIGHTS_SUFFIX)
            return ("mha.static-attention",) if out and out.ok and weights and not weights.ok else ()
        return self._class_clauses(loc, path)[:1]

    def _add_roots(self, card: Card, r: Result, where: str) -> None:
        """Each root the differential check confirmed counts as own evidence against its clause
        (``_root_clauses``), so a wiring root under a wrong child is a root of its own."""
        loc = r.outcome.localization if r.outcome else None
        if loc is None or not loc.confirmed:
            return
        for path in loc.roots:
            primary = self._root_clauses(loc, path)
            if primary:
                card.add(primary, f"{where}: differential check", "failed",
                         f"{loc.kind(path)} at {path} is a root: swapping its class for the reference is part of what "
                         f"makes the model agree ({loc.swaps[-1].verdict})", own={c: () for c in primary})

    def _explained(self, r: Result, clauses: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """What each of a row's clauses relies on, where the row itself says more than ``clauses.toml [given]``:

        * an unmasked attention row is the formula's own evidence (it relies on no masking clause);
        * a block row's residual clause has only the block's output as evidence: it relies on the block's clause too
          (a confirmed root separates them, ``_add_roots``);
        * a float64 row's ``numerics.float64`` is the row's own formula comparison: it relies on the row's clauses;
        * the whole model's logits (``projection.logits`` on the transformer row) rely on every clause the model
          does (the projection's own row judges the layer alone);
        * a whole-model FAIL the differential check explained (swapping its roots' classes for the reference made
          the model agree): each of its clauses relies on the roots' (a root of the row's own clause stays a root).
        """
        own: dict[str, tuple[str, ...]] = {}
        if r.component in UNMASKED_ATTENTION:  # the formula judged without a mask: relies on no masking clause
            own.update({c: () for c in clauses if c in ("mha.formula", "mha.static-attention")})
        blocks = tuple(c for c in clauses if c in ("encoder.block", "decoder.block"))
        for c in clauses:
            if blocks and c in variants.RESIDUAL_CLAUSES.values():
                own[c] = tuple(dict.fromkeys(GIVEN.get(c, ()) + blocks))
        if r.component == "transformer" and "projection.logits" in clauses:  # the logits of the whole model: they
            own["projection.logits"] = tuple(g for g in GIVEN.get("transformer.compose", ())  # rely on all of it
                                             if g != "projection.logits")
        formula = tuple(c for c in clauses if not c.startswith("numerics."))
        if r.dtype == "float64" and "numerics.float64" in clauses and formula:
            own["numerics.float64"] = formula
        loc = r.outcome.localization if r.outcome else None
        if loc is not None and loc.confirmed:
            # a root's clause (``_root_clauses``) is always one of its class's
            given = tuple(dict.fromkeys(c for path in loc.roots for c in self._class_clauses(loc, path)))
            own.update({c: given for c in clauses if given and c not in given})
        return own

    def to_json(self) -> dict[str, Any]:
        rows = []
        for group in self.rows():
            worst = max(group, key=lambda r: (not r.passed, r.margin))
            rows.append({**worst.to_json(), "config": worst.config, "configs": [r.config for r in group],
                         "passed": all(r.passed for r in group),
                         "command": self.command(worst.component, worst.device, worst.dtype)})
        return jsonable({
            "schema": SCHEMA, "impl": self.impl, "variant": self.variant, "seed": self.seed, "passed": self.passed,
            "first_divergence": self.first_divergence, "torch": torch.__version__,
            "python": platform.python_version(), "devices": self.devices, "dtypes": self.dtypes,
            "components": self.components, "configs": {c.name: c.text() for c in CONFIGS},
            "elapsed_s": round(self.elapsed, 3), "rows": rows, "results": [r.to_json() for r in self.results],
            "localization": [{"component": r.component, "config": r.config, **loc.to_json()}
                             for r, loc in self.localizations],
            "card": [row for card in [self.card()] for row in card.rows(verdict.follows(card))
                     if row["status"] != "not run"]})


def available_devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def default_dtypes(device: str) -> list[str]:
    """float64 and float32 everywhere; float16 and bfloat16 too on CUDA."""
    return ["float64", "float32"] + (["float16", "bfloat16"] if device == "cuda" else [])


def sweep(impl_name: str, *, components: Sequence[str], devices: Sequence[str], dtypes: dict[str, list[str]],
          seed: int, configs: Sequence[Config] = CONFIGS, progress: Callable[[str], None] | None = None,
          impl_map: str | Path | None = None, call_timeout: float | None = guard.CALL_TIMEOUT,
          row_timeout: float | None = guard.TEST_TIMEOUT) -> Report:
    """Run every selected component x config x device x dtype (on ``impl_name`` seen through ``impl_map``)."""
    impl = load_impl(impl_name, impl_map, call_timeout=call_timeout)
    call_guard = guard.CallGuard(contract_types(impl), call_timeout).install()
    start = time.perf_counter()
    results: list[Result] = []
    hung = ""
    with declared(impl, diagnosis_of(impl_name, impl_map)):  # the map's variant and mask layout, this run only
        variant = variants.variant()
        try:
            for device in devices:
                for dtype_name_ in dtypes[device]:
                    for component in components:
                        for config in configs:
                            if progress:
                                progress(f"{component} {config.name} {device} {dtype_name_}")
                            if hung:  # after a hang every row would hang again: not reached
                                results.append(Result(component, config.name, device, dtype_name_, None,
                                                      f"not reached because of {hung}", 0.0))
                                continue
                            call_guard.reset()
                            result = run_one(impl, component, config, device, DTYPES[dtype_name_], seed,
                                             row_timeout=row_timeout)
                            if result.error.startswith(guard.BOUNDED):
                                hung = result.error
                            results.append(result)
        finally:
            call_guard.remove()
    return Report(impl_name, seed, list(devices), dict(dtypes), list(components), results,
                  time.perf_counter() - start, diagnosis_of(impl_name, impl_map),
                  impl_map=None if impl_map is None else str(impl_map), compile=contract.compile_backend(),
                  threads=torch.get_num_threads(), variant=variant)
