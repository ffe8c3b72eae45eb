"""Measure each way the blog's code (and PyTorch's paths) diverge from the paper: ``python -m reference.oracles.divergences``.

Prints the table quoted in ``docs/divergences.md``. Each blog variant is written here in a few lines (as the
blog writes it) and measured against the float64 formula; none of this is used by the tests.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reference.oracles import numpy_ref


def blog_layer_norm(x: torch.Tensor, alpha: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The blog's LayerNormalization: unbiased std, eps added outside the root."""
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True)
    return alpha * (x - mean) / (std + eps) + bias


def blog_pe_table(seq_len: int, d_model: int) -> torch.Tensor:
    """The blog's table: positions and frequencies in float32 (``dtype=torch.float``)."""
    pe = torch.zeros(seq_len, d_model, dtype=torch.float64)
    position = torch.arange(0, seq_len, dtype=torch.float).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)  # RuntimeError for odd d_model: one column too many
    return pe


def measure_layer_norm(rows: list[tuple[str, str]]) -> None:
    gen = torch.Generator().manual_seed(0)
    for d in (8, 64, 512):
        x = torch.randn(64, d, generator=gen, dtype=torch.float64)
        ones, zeros = torch.ones(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
        ref = F.layer_norm(x, (d,), ones, zeros, 1e-6)
        err = (blog_layer_norm(x, ones, zeros) - ref).abs().max().item()
        rows.append((f"LayerNorm, unbiased std, eps outside root (d={d})",
                     f"max abs {err:.2e} vs nn.LayerNorm on unit-variance rows (~1/(2d) = {1 / (2 * d):.2e} relative)"))


def measure_pe(rows: list[tuple[str, str]]) -> None:
    for seq_len, d in ((128, 512), (2048, 512)):
        err = np.abs(blog_pe_table(seq_len, d).numpy() - numpy_ref.positional_encoding_table(seq_len, d)).max()
        err32 = np.abs(torch.from_numpy(numpy_ref.positional_encoding_table(seq_len, d)).float().double().numpy()
                       - numpy_ref.positional_encoding_table(seq_len, d)).max()
        rows.append((f"PE table built in float32 (seq_len={seq_len}, d={d})",
                     f"max abs {err:.2e} vs the float64 formula (a float64 table rounded once to float32: {err32:.2e})"))
    try:
        blog_pe_table(8, 7)
        rows.append(("PE with odd d_model (d=7)", "no error"))
    except RuntimeError as exc:
        rows.append(("PE with odd d_model (d=7)", f"RuntimeError: {str(exc).splitlines()[0][:80]}"))


def measure_fill(rows: list[tuple[str, str]]) -> None:
    scores = torch.randn(1, 1, 2, 4)
    mask = torch.tensor([[[[1, 1, 0, 0], [0, 0, 0, 0]]]])
    for dtype in (torch.float16, torch.bfloat16):
        try:
            w = scores.to(dtype).masked_fill(mask == 0, -1e9).softmax(-1)
            rows.append((f"masked_fill(-1e9) in {dtype}",
                         f"runs; fully masked row gets uniform weights {w[0, 0, 1].tolist()}"))
        except RuntimeError as exc:
            rows.append((f"masked_fill(-1e9) in {dtype}", f"RuntimeError: {str(exc).splitlines()[0][:80]}"))


def _first(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in t.reshape(-1)[:3].tolist()) + ", ...]"


def measure_fully_masked(rows: list[tuple[str, str]]) -> None:
    torch.manual_seed(0)
    q = torch.randn(1, 2, 8)
    keep = torch.tensor([[[True, True], [False, False]]])  # row 1 sees no key; contract: True = keep
    blog = (q @ q.transpose(-2, -1) / math.sqrt(8)).masked_fill(~keep, -1e9).softmax(-1) @ q
    rows.append(("fully masked row, blog (-1e9 fill)", f"uniform average of values: {_first(blog[0, 1, :3])}"))
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    with torch.no_grad():
        out, _ = mha(q, q, q, attn_mask=~keep[0])
    rows.append(("fully masked row, nn.MultiheadAttention (bool attn_mask)", f"{_first(out[0, 1])}"))
    out = F.scaled_dot_product_attention(q[:, None], q[:, None], q[:, None], attn_mask=keep[:, None])
    rows.append(("fully masked row, F.scaled_dot_product_attention (bool mask)", f"{_first(out[0, 0, 1, :3])}"))
    float_mask = torch.zeros(1, 1, 2, 2).masked_fill(~keep[:, None], float("-inf"))
    out = F.scaled_dot_product_attention(q[:, None], q[:, None], q[:, None], attn_mask=float_mask)
    rows.append(("fully masked row, F.scaled_dot_product_attention (-inf float mask)", f"{_first(out[0, 0, 1, :3])}"))
    out, _ = numpy_ref.scaled_dot_product_attention(q[:, None].double().numpy(), q[:, None].double().numpy(),
                                                    q[:, None].double().numpy(), keep[:, None].numpy())
    rows.append(("fully masked row, this package and the NumPy oracle", f"{_first(out[0, 0, 1, :3])}"))


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    rows: list[tuple[str, str]] = []
    for measure in (measure_layer_norm, measure_pe, measure_fill, measure_fully_masked):
        measure(rows)
    table = Table(title=f"Divergences from the paper (torch {torch.__version__})")
    table.add_column("variant")
    table.add_column("measured effect")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
