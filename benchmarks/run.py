"""The benchmark command: the implementation vs ``nn.Transformer``, same weights, same run, alternating.

    python -m benchmarks.run [--config small|base|all] [--device cpu|cuda|all] [--compile] [--quick]
                             [--threads N] [--markdown FILE] [--json FILE]

Prints one row per (config, device, dtype, mode, masks, engine): median ms per step, tokens/s (B * 2L tokens
per step), peak memory of the step and the throughput ratio to ``nn.Transformer`` on its regular path measured
in the same rounds (> 1: faster). CPU runs float32; CUDA, when present, float32 and bfloat16. ``--compile`` adds
the implementation under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass

import torch
from rich.console import Console
from torch.profiler import ProfilerActivity, profile
from rich.table import Table

from reference.spec.contract import DEFAULT_IMPL
from reference.kit.load import load_impl

from .configs import CONFIGS, BenchConfig
from .measure import peak_memory, time_engines
from .workloads import BASELINE, MASKS, MODES, EncoderDecoder, add_implementation, engines, make_pair


@dataclass(frozen=True)
class Row:
    """One measured cell of the results table."""

    config: str
    device: str
    dtype: str
    mode: str
    masks: str
    engine: str
    ms: float
    spread: float
    tokens_per_s: float
    peak_mib: float
    ratio: float
    ratio_min: float
    ratio_max: float
    compile_s: float | None
    max_abs_diff: float  # max |output - baseline output| (float32 rounding: a few 1e-6 expected)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=(*CONFIGS, "all"), default="all")
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                   help="all = cpu, and cuda when available (default)")
    p.add_argument("--compile", action="store_true", help="also time the implementation under torch.compile")
    p.add_argument("--backend", default="inductor", help="torch.compile backend for --compile (default inductor)")
    p.add_argument("--quick", action="store_true", help="3 short rounds: a smoke run, not numbers to quote")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 15, --quick 3)")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds per blocked_autorange (default 0.3, --quick 0.1)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (fixed)")
    p.add_argument("--timer", choices=("wall", "thread"), default="wall",
                   help="wall clock (default), or the calling thread's CPU time (needs --threads 1; discounts time "
                        "other processes hold the core on a shared machine)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {MODES}")
    p.add_argument("--masks", default=",".join(MASKS), help=f"comma list of {MASKS}")
    p.add_argument("--impl", default=DEFAULT_IMPL,
                   help="module implementing the contract; a comma list times the others in the same rounds too "
                        "(engines named after their modules), e.g. a copy of an older version")
    p.add_argument("--profile", action="store_true",
                   help="also print torch.profiler's top operators (self CPU time) of every engine, per cell")
    p.add_argument("--markdown", help="also write the table as Markdown to this file")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    args = p.parse_args(argv)
    if args.timer == "thread" and args.threads != 1:
        p.error("--timer thread measures one thread's CPU time: use it with --threads 1")
    args.rounds = args.rounds or (3 if args.quick else 15)
    args.min_run_time = args.min_run_time or (0.1 if args.quick else 0.3)
    return args


def device_dtypes(choice: str) -> list[tuple[str, torch.dtype]]:
    """(device, dtype) pairs to run: CPU float32; CUDA float32 and bfloat16 when a GPU is present."""
    out = [("cpu", torch.float32)] if choice in ("cpu", "all") else []
    if choice in ("cuda", "all") and torch.cuda.is_available():
        out += [("cuda", torch.float32), ("cuda", torch.bfloat16)]
    elif choice == "cuda":
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    return out


def environment(args: argparse.Namespace) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "threads": args.threads, "timer": args.timer,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "impl": args.impl, "rounds": args.rounds, "min_run_time": args.min_run_time,
            "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
            "loadavg_start": _loadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run_cell(pair, cfg: BenchConfig, device: str, dtype: torch.dtype, mode: str, masks: str, compiled,
             args: argparse.Namespace) -> list[Row]:
    contenders = engines(pair, mode, masks, compiled=compiled)
    with torch.no_grad():
        outputs = {e.name: e.output().float() for e in contenders}
    diffs = {name: float((out - outputs[BASELINE]).abs().max()) for name, out in outputs.items()}
    timer = time.thread_time if args.timer == "thread" else time.perf_counter
    timings = time_engines(contenders, BASELINE, rounds=args.rounds, min_run_time=args.min_run_time,
                           threads=args.threads, timer=timer)
    rows = []
    for engine in contenders:
        if args.profile:
            print_profile(engine, f"{cfg.name}/{device}/{dtype}/{mode}/{masks}")
        t = timings[engine.name]
        rows.append(Row(cfg.name, device, str(dtype).removeprefix("torch."), mode, masks, engine.name,
                        ms=t.median * 1e3, spread=t.spread, tokens_per_s=cfg.tokens / t.median,
                        peak_mib=peak_memory(engine, torch.device(device)) / 2**20, ratio=t.ratio,
                        ratio_min=min(t.ratios), ratio_max=max(t.ratios), compile_s=engine.compile_s,
                        max_abs_diff=diffs[engine.name]))
    return rows


def print_profile(engine, where: str, steps: int = 3, top: int = 15) -> None:
    """torch.profiler's operator table (sorted by self CPU time) over ``steps`` steps of ``engine``."""
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else []),
                 ) as prof:
        for _ in range(steps):
            engine.step()
    print(f"\n=== profile: {engine.name} [{where}], {steps} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48))


def render(rows: list[Row], env: dict, console: Console) -> None:
    table = Table(title="implementation vs nn.Transformer (same weights; ratio = throughput / nn.Transformer "
                        "regular path, same rounds)")
    for col in ("config", "device", "dtype", "mode", "masks", "engine"):
        table.add_column(col)
    for col in ("ms/step", "± spread", "tokens/s", "peak MiB", "× nn.Transformer", "ratio range", "max |Δ out|"):
        table.add_column(col, justify="right")
    for r in rows:
        style = None if r.engine == BASELINE else ("green" if r.ratio >= 0.95 else "red")
        table.add_row(r.config, r.device, r.dtype, r.mode, r.masks, r.engine, f"{r.ms:.2f}",
                      f"{100 * r.spread:.0f}%", f"{r.tokens_per_s:,.0f}", f"{r.peak_mib:.1f}",
                      f"[{style}]{r.ratio:.3f}[/]" if style else f"{r.ratio:.3f}",
                      f"{r.ratio_min:.2f}-{r.ratio_max:.2f}", f"{r.max_abs_diff:.1e}")
    console.print(table)
    compiled = [r for r in rows if r.compile_s is not None]
    for r in compiled:
        console.print(f"compile (first call) {r.config}/{r.device}/{r.dtype}/{r.mode}/{r.masks}: {r.compile_s:.1f} s")
    console.print(", ".join(f"{k}: {v}" for k, v in env.items()))


def markdown(rows: list[Row], env: dict) -> str:
    head = ("| config | device | dtype | mode | masks | engine | ms/step | spread | tokens/s | peak MiB "
            "| × nn.Transformer | ratio range | max abs Δ out |")
    lines = [head, "|" + "---|" * 6 + "---:|" * 7]
    for r in rows:
        lines.append(f"| {r.config} | {r.device} | {r.dtype} | {r.mode} | {r.masks} | {r.engine} | {r.ms:.2f} "
                     f"| {100 * r.spread:.0f}% | {r.tokens_per_s:,.0f} | {r.peak_mib:.1f} | {r.ratio:.3f} "
                     f"| {r.ratio_min:.2f}–{r.ratio_max:.2f} | {r.max_abs_diff:.1e} |")
    env_lines = [f"- {k}: `{v}`" for k, v in env.items()]
    return "\n".join(lines + [""] + env_lines) + "\n"


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    impl_names = args.impl.split(",")
    impl, others = load_impl(impl_names[0]), {name: load_impl(name) for name in impl_names[1:]}
    env = environment(args)
    console = Console(width=max(175, Console().width))
    configs = list(CONFIGS.values()) if args.config == "all" else [CONFIGS[args.config]]
    modes, mask_kinds = args.modes.split(","), args.masks.split(",")
    rows: list[Row] = []
    for device, dtype in device_dtypes(args.device):
        for cfg in configs:
            pair = make_pair(impl, cfg, device=device, dtype=dtype)
            for name, other in others.items():
                add_implementation(pair, name, other)
            compiled = None
            if args.compile:
                torch._dynamo.reset()
                compiled = torch.compile(EncoderDecoder(pair.core), fullgraph=True, backend=args.backend)
            for mode in modes:
                for masks in mask_kinds:
                    console.log(f"{cfg.name} ({cfg.label()}) {device} {dtype} {mode} {masks}")
                    rows += run_cell(pair, cfg, device, dtype, mode, masks, compiled, args)
    env["loadavg_end"] = _loadavg()
    render(rows, env, console)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, env))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": [asdict(r) for r in rows]}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
