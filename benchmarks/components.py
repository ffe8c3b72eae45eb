"""Where the time goes: the implementation's LayerNormalization and attention core against torch's fused kernels.

    python -m benchmarks.components [--threads N] [--timer wall|thread] [--rounds R] [--impl A[,B...]]

Times, at the small and base configs' shapes, forward (no grad) and forward+backward of
``LayerNormalization`` vs ``nn.LayerNorm`` (one fused ``native_layer_norm`` kernel), and of the static
``MultiHeadAttentionBlock.attention`` (explicit ``softmax(q k^T / sqrt(d_k)) v``, key-padding mask) vs
``F.scaled_dot_product_attention`` (the kernel ``nn.MultiheadAttention`` calls on its regular path), alternating
in rounds like ``benchmarks.run``; prints medians and the throughput ratio implementation / torch. A comma list
of ``--impl`` modules times each (the first is "scratch") in the same rounds.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from reference.spec.contract import DEFAULT_IMPL, construct
from reference.kit.load import load_impl

from .configs import CONFIGS
from .measure import time_engines
from .workloads import Engine


def _step(fn, train: bool, grad: torch.Tensor):
    if train:
        return lambda: fn().backward(grad)

    def forward() -> None:
        with torch.no_grad():
            fn()
    return forward


def _engine(name: str, fn, train: bool, grad: torch.Tensor) -> Engine:
    return Engine(name, _step(fn, train, grad), fn)


def layer_norm_engines(impls: dict, shape: tuple[int, ...], train: bool) -> list[Engine]:
    d = shape[-1]
    x = torch.randn(shape, requires_grad=train)
    grad = torch.randn(shape)
    out = []
    for name, impl in impls.items():
        ours = construct(impl.LayerNormalization, d)
        out.append(_engine(name, lambda ours=ours: ours(x), train, grad))
    theirs = nn.LayerNorm(d, eps=float(ours.eps))
    return out + [_engine("torch", lambda: theirs(x), train, grad)]


def attention_engines(impls: dict, B: int, h: int, L: int, d_k: int, train: bool) -> list[Engine]:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, h, L, d_k, generator=gen).requires_grad_(train) for _ in range(3))
    lengths = torch.randint(L // 2, L + 1, (B,), generator=gen)
    mask = (torch.arange(L)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, L), True = attend
    grad = torch.randn(B, h, L, d_k)
    out = [_engine(name, lambda a=impl.MultiHeadAttentionBlock.attention: a(q, k, v, mask, None)[0], train, grad)
           for name, impl in impls.items()]
    return out + [_engine("torch", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), train, grad)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.components", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--timer", choices=("wall", "thread"), default="wall")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--min-run-time", type=float, default=0.3)
    p.add_argument("--impl", default=DEFAULT_IMPL)
    args = p.parse_args(argv)
    if args.timer == "thread" and args.threads != 1:
        p.error("--timer thread measures one thread's CPU time: use it with --threads 1")
    torch.set_num_threads(args.threads)
    names = args.impl.split(",")
    impls = {("scratch" if i == 0 else name): load_impl(name) for i, name in enumerate(names)}
    timer = time.thread_time if args.timer == "thread" else time.perf_counter
    table = Table(title=f"components: {args.impl} vs torch's kernels ({args.threads} threads, {args.timer} timer)")
    for col in ("component", "shape", "mode"):
        table.add_column(col)
    for name in [*impls, "torch"]:
        table.add_column(f"{name} µs", justify="right")
    for name in impls:
        table.add_column(f"{name} × torch", justify="right")
    for cfg in CONFIGS.values():
        d_k = cfg.d_model // cfg.h
        cases = [("LayerNormalization vs nn.LayerNorm", f"[{cfg.B}, {cfg.L}, {cfg.d_model}]",
                  lambda train: layer_norm_engines(impls, (cfg.B, cfg.L, cfg.d_model), train)),
                 ("attention vs F.sdpa (key padding)", f"[{cfg.B}, {cfg.h}, {cfg.L}, {d_k}]",
                  lambda train: attention_engines(impls, cfg.B, cfg.h, cfg.L, d_k, train))]
        for name, shape, make in cases:
            for train in (False, True):
                timings = time_engines(make(train), "torch", rounds=args.rounds, min_run_time=args.min_run_time,
                                       threads=args.threads, timer=timer)
                table.add_row(name, shape, "fwd+bwd" if train else "forward",
                              *(f"{timings[n].median * 1e6:,.0f}" for n in [*impls, "torch"]),
                              *(f"{timings[n].ratio:.2f}" for n in impls))
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
