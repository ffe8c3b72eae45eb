"""The console output of a sweep: the table (``rich``), one block per FAIL row (what failed, the localisation, the
command that reproduces it), the summary line and the conformance card."""

from __future__ import annotations

import math
from typing import Any

from reference.kit import verdict

from .cases import CONFIGS
from .sweep import Report


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    return "inf" if math.isinf(x) else f"{x:.2e}"


def render(report: Report, console: Any) -> None:
    """The table, then one block per FAIL row: what failed, the localisation, the command that reproduces it."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Equivalence report: {report.impl} vs float64 NumPy oracle and torch (seed {report.seed}, "
                        f"variant {report.variant})", title_justify="left")
    for name, justify in (("component", "left"), ("device", "left"), ("dtype", "left"), ("max abs", "right"),
                          ("max rel", "right"), ("impl/torch", "right"), ("tolerance", "left"),
                          ("result", "left"), ("worst", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    failed = []
    for group in report.rows():
        worst = max(group, key=lambda r: (not r.passed, r.margin))
        ok = all(r.passed for r in group)
        v = worst.outcome.verdict if worst.outcome else None
        ratio = v.ratio if v else None
        if worst.outcome is not None and worst.outcome.skipped:
            table.add_row(worst.component, worst.device, worst.dtype, "-", "-", "-", worst.outcome.detail,
                          "[yellow]SKIP[/]", "-")
            continue
        table.add_row(worst.component, worst.device, worst.dtype, _fmt(v.max_abs if v else None),
                      _fmt(v.max_rel if v else None), "-" if ratio is None else f"{ratio:.2f}",
                      v.tolerance if v else "-", "[green]PASS[/]" if ok else "[bold red]FAIL[/]", worst.config)
        if not ok:
            failed.append(worst)
    console.print(table)
    for r in failed:  # soft_wrap: long lines stay whole, so the commands can be copied
        v = r.outcome.verdict if r.outcome else None
        console.print(f"[bold red]FAIL[/] {r.component} ({r.device}, {r.dtype}, config {r.config}): "
                      + escape(r.error or f"{v.line()}; {r.outcome.detail}"), highlight=False,
                      soft_wrap=True)
        loc = r.outcome.localization if r.outcome else None
        if loc is not None and not loc.ok:
            console.print(loc.summary(), markup=False, highlight=False, soft_wrap=True)
        console.print(f"  reproduce: {report.command(r.component, r.device, r.dtype)}", markup=False,
                      highlight=False, soft_wrap=True)
    n_fail = sum(1 for g in report.rows() if not all(r.passed for r in g))
    summary = (f"{len(report.rows())} rows ({len(report.results)} runs over configs "
               f"{', '.join(c.name for c in CONFIGS)}) in {report.elapsed:.1f} s: ")
    summary += "[bold green]all PASS[/]" if n_fail == 0 else f"[bold red]{n_fail} FAIL[/]"
    for fault in report.faults:  # the model's own faults found by the diagnosis (module.bounded, module.pure)
        summary += f"; [bold red]FAIL[/] {escape(fault)}"
    if report.first_divergence:
        summary += f"; first divergence: {report.first_divergence}"
    console.print(summary, highlight=False, soft_wrap=True)
    card = report.card()
    lines = verdict.decide(card, 0).card_lines(card)
    console.print("\n".join([lines[0]] + [ln for ln in lines[1:] if " not run " not in ln]), markup=False,
                  highlight=False, soft_wrap=True)
