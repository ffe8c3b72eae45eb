"""PNG pictures of an equivalence report (``python -m reference.report --plots DIR``); needs matplotlib.

* ``error_heatmap.png``: |implementation - oracle| over positions x features for the worst row of the report;
* ``error_by_layer.png``: the full model's max abs error at every contract submodule, in execution order, with the
  tolerance it was held to, one line per (device, dtype), the first divergence marked;
* ``attention.png``: attention weights [Lq, Lk] of the implementation next to the float64 oracle's, and their
  difference, for the first layer's attention blocks (one head, the last batch element, which is padded);
* ``positional_table.png``: the implementation's positional table (read by encoding zeros) next to the formula's.

Figures are drawn with ``matplotlib.figure.Figure`` and the Agg canvas, so nothing touches pyplot's global state;
no layout engine (it doubles the drawing time), ``bbox_inches="tight"`` instead.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reference.oracles import numpy_ref
from reference.spec.contract import construct
from reference.kit.weights import to_numpy

if TYPE_CHECKING:  # pragma: no cover
    from .sweep import Report

EXACT = "lightgrey"  # colour of exactly equal cells in difference maps


def available() -> bool:
    """True when matplotlib can be imported."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)  # no layout engine: 2x cheaper; bbox_inches="tight" trims
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
    return path


def _log_abs(x: np.ndarray) -> np.ma.MaskedArray:
    """log10 |x|, with exact zeros masked (drawn in ``EXACT``) so they do not stretch the colour scale."""
    x = np.abs(np.asarray(x, dtype=np.float64))
    x = np.where(np.isnan(x), np.inf, x)
    return np.ma.masked_where(x == 0, np.log10(np.where(x == 0, 1.0, x)))


def _diff_cmap() -> Any:
    import matplotlib

    return matplotlib.colormaps["magma"].with_extremes(bad=EXACT)


def error_heatmap(report: "Report", path: Path) -> Path | None:
    """|impl - oracle| of the worst row (largest error over its allowance), positions x features."""
    candidates = [r for r in report.results if r.outcome is not None and r.outcome.actual is not None
                  and r.outcome.expected is not None and r.outcome.actual.shape == r.outcome.expected.shape
                  and r.outcome.actual.ndim == 3]
    if not candidates:
        return None
    worst = max(candidates, key=lambda r: (not r.passed, r.margin))
    diff = np.abs(worst.outcome.actual - worst.outcome.expected)  # (B, L, d)
    diff = np.where(np.isnan(diff), np.inf, diff)
    b = int(np.unravel_index(np.argmax(diff), diff.shape)[0])
    v = worst.outcome.verdict
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    image = ax.imshow(_log_abs(diff[b]), aspect="auto", cmap=_diff_cmap(), interpolation="nearest")
    fig.colorbar(image, ax=ax, label="log10 |impl - oracle| (grey: exactly equal)")
    ax.set_xlabel("feature (logit for the full model)")
    ax.set_ylabel("position")
    ax.set_title(f"worst row: {worst.component} ({worst.device}, {worst.dtype}, config {worst.config}, batch {b})\n"
                 f"max abs {v.max_abs:.2e}, allowed {v.allowed:.2e} ({v.tolerance}): "
                 f"{'PASS' if worst.passed else 'FAIL'}", fontsize=9)
    return _save(fig, path)


def error_by_layer(report: "Report", path: Path) -> Path | None:
    """Max abs error at every contract path of the full model, per (device, dtype), for the first config."""
    locs = [(r, loc) for r, loc in report.localizations]
    if not locs:
        return None
    config = locs[0][0].config
    locs = [(r, loc) for r, loc in locs if r.config == config]
    paths = [row.path for row in locs[0][1].rows if math.isfinite(row.max_abs)]
    fig = _figure(max(9.0, 0.22 * len(paths) + 3), 6)
    ax = fig.add_subplot()
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    nonzero = [row.max_abs for _, loc in locs for row in loc.rows if 0 < row.max_abs < math.inf]
    bottom = min(nonzero) / 30 if nonzero else 1e-17  # exact agreement (error 0) is drawn on this line
    for i, (r, loc) in enumerate(locs):
        colour = colours[i % len(colours)]
        rows = {row.path: row for row in loc.rows}
        xs = [j for j, p in enumerate(paths) if p in rows]
        err = [max(rows[paths[j]].max_abs, bottom) for j in xs]
        allowed = [max(rows[paths[j]].allowed, bottom) for j in xs]
        ax.semilogy(xs, err, "o-", color=colour, markersize=3, label=f"{r.device} {r.dtype}: max abs error")
        ax.semilogy(xs, allowed, "--", color=colour, linewidth=1, alpha=0.7, label=f"{r.device} {r.dtype}: allowed")
        if loc.first_divergence in paths:
            j = paths.index(loc.first_divergence)
            ax.axvline(j, color=colour, linestyle=":", linewidth=1.5)
            ax.annotate(f"first divergence ({r.dtype})", (j, err[xs.index(j)] if j in xs else bottom),
                        textcoords="offset points", xytext=(5, -14 - 11 * i), fontsize=8, color=colour)
    ax.set_xticks(range(len(paths)), paths, rotation=90, fontsize=7)
    ax.axhline(bottom, color="grey", linewidth=0.8)
    ax.set_ylabel("max |impl - float64 oracle| (bottom line: exactly 0)")
    ax.set_title(f"{report.impl}: error through the full model (config {config}), in execution order", fontsize=10)
    ax.legend(fontsize=7, ncols=2)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    return _save(fig, path)


def _pick_localization(report: "Report") -> tuple[Any, Any] | None:
    locs = report.localizations
    if not locs:
        return None
    failing = [(r, loc) for r, loc in locs if not loc.ok]
    if failing:
        return failing[0]
    precision = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3}
    return max(locs, key=lambda item: (item[0].config == locs[0][0].config, precision.get(item[0].dtype, 0)))


def attention(report: "Report", path: Path) -> Path | None:
    """Implementation vs oracle attention weights (head 0 of the last batch element) for the first layer's blocks."""
    picked = _pick_localization(report)
    if picked is None:
        return None
    r, loc = picked
    suffix = numpy_ref.WEIGHTS_SUFFIX
    blocks = ["encoder.layers.0.self_attention_block", "decoder.layers.0.self_attention_block",
              "decoder.layers.0.cross_attention_block"]
    if loc.first_divergence and loc.first_divergence.endswith("attention_block") and loc.first_divergence not in blocks:
        blocks.append(loc.first_divergence)
    blocks = [b for b in blocks if b + suffix in loc.oracle_outputs]
    if not blocks:
        return None
    fig = _figure(11, 3.2 * len(blocks))
    axes = fig.subplots(len(blocks), 3, squeeze=False, gridspec_kw={"hspace": 0.5, "wspace": 0.3})
    for row, block in enumerate(blocks):
        ref = loc.oracle_outputs[block + suffix]  # (B, h, Lq, Lk)
        b = ref.shape[0] - 1
        impl = loc.impl_outputs.get(block + suffix)
        panels = [("float64 oracle", ref[b, 0], "viridis", (0, 1))]
        if impl is not None and impl.shape == ref.shape:
            panels.insert(0, ("implementation", impl[b, 0], "viridis", (0, 1)))
            panels.append(("log10 |difference| (grey: exactly equal)", _log_abs(impl[b, 0] - ref[b, 0]),
                           _diff_cmap(), (None, None)))
        else:
            panels.insert(0, ("implementation: no attention_scores", np.zeros_like(ref[b, 0]), "viridis", (0, 1)))
        for col, (title, data, cmap, (lo, hi)) in enumerate(panels):
            ax = axes[row][col]
            image = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            if col >= 1:  # one colour bar for the two weight maps, one for the difference
                fig.colorbar(image, ax=ax if col == 2 else list(axes[row][:2]), shrink=0.8)
            ax.set_title(f"{block}\n{title}" if col == 0 else title, fontsize=8)
            ax.set_xlabel("key", fontsize=8)
            ax.set_ylabel("query", fontsize=8)
    fig.suptitle(f"{report.impl}: attention weights, head 0, batch element {b} ({r.device}, {r.dtype}, "
                 f"config {r.config})", fontsize=10)
    return _save(fig, path)


def positional_table(impl: Any, path: Path, *, seq_len: int = 64, d_model: int = 64,
                     dtype: torch.dtype = torch.float32) -> Path:
    """The implementation's table (``PositionalEncoding`` applied to zeros) vs the float64 formula."""
    module = construct(impl.PositionalEncoding, d_model, seq_len, 0.0, dtype=dtype).eval()
    with torch.no_grad():
        table = to_numpy(module(torch.zeros(1, seq_len, d_model, dtype=dtype)))[0]  # (L, d)
    ref = numpy_ref.positional_encoding_table(seq_len, d_model)
    fig = _figure(13, 4)
    axes = fig.subplots(1, 3, gridspec_kw={"wspace": 0.3})
    for ax, (title, data, cmap, lo, hi) in zip(axes, (
            (f"implementation ({str(dtype).replace('torch.', '')})", table, "RdBu_r", -1, 1),
            ("float64 formula", ref, "RdBu_r", -1, 1),
            ("log10 |difference| (grey: exactly equal)", _log_abs(table - ref), _diff_cmap(), None, None))):
        image = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
        fig.colorbar(image, ax=ax, shrink=0.85)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("feature (2i: sin, 2i+1: cos)")
        ax.set_ylabel("position")
    fig.suptitle(f"positional table, seq_len={seq_len}, d_model={d_model}: max abs difference "
                 f"{np.max(np.abs(table - ref)):.2e}", fontsize=10)
    return _save(fig, path)


def write_all(report: "Report", directory: Path, *, impl: Any) -> list[Path]:
    """Every picture of ``report`` into ``directory`` (created); returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [error_heatmap(report, directory / "error_heatmap.png"),
               error_by_layer(report, directory / "error_by_layer.png"),
               attention(report, directory / "attention.png")]
    try:
        written.append(positional_table(impl, directory / "positional_table.png"))
    except Exception:  # an implementation whose PositionalEncoding cannot run: the other pictures still count
        pass
    return [p for p in written if p is not None]
