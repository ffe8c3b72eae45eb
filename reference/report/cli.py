"""``python -m reference.report`` / ``scratch-transformer-report``: arguments, progress bar, output files, exit
status (0 all PASS, 1 any FAIL, 2 usage error, 4 an ``--impl-map`` that points nowhere)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

from reference.spec import clauses, contract, variants
from reference.spec.contract import DEFAULT_IMPL
from reference.kit import guard
from reference.kit.load import ModelFault, diagnosis_of, load_impl, use_declared
from reference.kit.adapter import MapError
from .cases import CONFIGS
from .render import render
from .sweep import COMPONENTS, DTYPES, available_devices, default_dtypes, select_components, sweep


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reference.report",
                                description="Equivalence report of a contract implementation against the float64 "
                                            "NumPy oracle and torch's own modules; exits 1 on any FAIL.")
    p.add_argument("--impl", default=DEFAULT_IMPL, help="module implementing the contract (default: %(default)s)")
    p.add_argument("--impl-map", type=Path, metavar="FILE",
                   help="TOML map of the implementation's own names onto the contract's (README)")
    p.add_argument("--device", default="all", choices=("cpu", "cuda", "all"),
                   help="device(s) to sweep (default: every available one)")
    p.add_argument("--dtype", action="append", choices=sorted(DTYPES) + ["all"],
                   help="dtype(s), repeatable (default: float64 and float32; plus float16, bfloat16 on CUDA)")
    p.add_argument("--dtypes", default=os.environ.get("SCRATCH_TRANSFORMER_DTYPES"), metavar="LIST",
                   help="comma-separated dtypes, as pytest's --dtypes (env SCRATCH_TRANSFORMER_DTYPES): the report's "
                        "dtypes among them are swept (tf32 and autocast have no report rows); with --dtype too, "
                        "their intersection")
    p.add_argument("--component", action="append",
                   help=f"component(s), repeatable: a name, a family (multi_head_attention, grad) or a glob; known: "
                        f"{', '.join(COMPONENTS)}")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and masks (default: %(default)s)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON (docs/report.md)")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots (needs matplotlib)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: %(default)s; the sweep's tensors are tiny, more threads only "
                        "add contention)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--call-timeout", type=float, default=guard.CALL_TIMEOUT, metavar="SECONDS",
                   help="seconds one call into the implementation may take (its import, the API diagnosis, each "
                        "module forward) before it is a FAIL of module.bounded (default %(default)g; 0: no limit)")
    p.add_argument("--row-timeout", type=float, default=guard.TEST_TIMEOUT, metavar="SECONDS",
                   help="seconds one report row may take (default %(default)g; 0: no limit)")
    p.add_argument("--variant", choices=variants.VARIANTS, default=None,
                   help="the residual layout to judge against: pre-norm (default, the blog's) or post-norm (the "
                        "paper's, nn.Transformer's default norm_first=False), or the map's `variant = ...` line; env "
                        "SCRATCH_TRANSFORMER_VARIANT")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="build every module under torch.compile(backend=BACKEND) (default inductor; also env "
                        "SCRATCH_TRANSFORMER_COMPILE): does compilation change the numbers?")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 all PASS, 1 any FAIL, 2 usage error, 4 a map error).
    The run's settings (variant, mask layout, compile backend) are the caller's again when it returns."""
    with contract.kept_run_settings():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    args = parse_args(argv)
    if args.variant:
        variants.use_variant(args.variant)
    if args.compile:
        contract.use_compile(args.compile)
    out = Console(width=None if sys.stdout.isatty() else 150)
    err = Console(stderr=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        err.print("--device cuda: CUDA is not available on this machine")
        return 2
    torch.set_num_threads(max(1, args.threads))
    devices = available_devices() if args.device == "all" else [args.device]
    chosen = None if not args.dtype or "all" in args.dtype else list(dict.fromkeys(args.dtype))
    dtypes = {d: (chosen or default_dtypes(d)) for d in devices}
    if args.dtypes:
        wanted = [x.strip() for x in args.dtypes.split(",") if x.strip()]
        unknown = [x for x in wanted if x not in clauses.DTYPES]
        if unknown or not wanted:
            err.print(f"error: --dtypes {args.dtypes!r}: unknown dtype(s) {unknown}; choose from "
                      f"{','.join(clauses.DTYPES)}", markup=False)
            return 2
        dtypes = {d: [x for x in names if x in wanted] for d, names in dtypes.items()}
    try:
        components = select_components(args.component)
        impl = load_impl(args.impl, args.impl_map, call_timeout=args.call_timeout or None)
        use_declared(impl, diagnosis_of(args.impl, args.impl_map), args.variant)
    except ModelFault as exc:  # the model hung or over-allocated in the diagnosis: a verdict, not a usage error
        out.print(f"FAIL {exc}", markup=False, highlight=False, soft_wrap=True)
        return 1
    except MapError as exc:  # a map that points nowhere names its line: a usage error, as pytest's exit 4
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        return 4
    except (ValueError, ImportError) as exc:
        err.print(f"error: {exc}", markup=False)
        return 2
    if args.plots is not None:
        from . import plots
        if not plots.available():
            err.print("--plots needs matplotlib: pip install 'scratch-transformer[plots]'")
            return 2
    total = len(components) * len(CONFIGS) * sum(len(v) for v in dtypes.values())
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=args.no_progress) as bar:
        task = bar.add_task("sweep", total=total)
        first = [True]

        def progress(label: str) -> None:
            if not first[0]:
                bar.advance(task)
            first[0] = False
            bar.update(task, description=label.ljust(40))

        report = sweep(args.impl, components=components, devices=devices, dtypes=dtypes, seed=args.seed,
                       progress=progress, impl_map=args.impl_map, call_timeout=args.call_timeout or None,
                       row_timeout=args.row_timeout or None)
    render(report, out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n")
        out.print(f"JSON written to {args.json}", highlight=False, soft_wrap=True)
    if args.plots is not None:
        from . import plots
        written = plots.write_all(report, args.plots, impl=load_impl(args.impl, args.impl_map))
        out.print(f"plots written: {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    return 0 if report.passed else 1
