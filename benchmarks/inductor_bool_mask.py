"""Why compiled CPU training once lost: inductor's cost of storing a bool mask, and the FFN with and without one.

    python -m benchmarks.inductor_bool_mask [--threads N] [--shape B L D_FF]

Part 1 times three inductor kernels over the same float32 [B, L, d_ff] input: ``x > 0`` stored as bool, the same
stored as uint8, and a float ReLU. Part 2 times one compiled feed-forward block (``linear_2(act(linear_1(x)))``,
d_model = 128) forward and backward with ``torch.relu`` (inductor saves the derivative as a bool mask) and with
the model's ``_ReLUFromOutput`` (the derivative read off the float output as ``grad * sign(out)``), and the same
eager. Per-kernel self times come from ``torch.profiler`` with ``torch._inductor.config.cpp.enable_kernel_profile``
(mean self time per call over 10 calls); end-to-end times from ``torch.utils.benchmark``. Numbers in
docs/performance.md ("The three changes of issue 26", item 3).
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.benchmark import Timer


def compile_fresh(fn: Callable) -> Callable:
    """``fn`` under inductor (``fullgraph=True``), with Dynamo's caches cleared first."""
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True)


def kernel_times(compiled: Callable, *args) -> dict[str, float]:
    """{generated kernel name: self µs per call} of calls to an inductor-compiled function (after warm-up)."""
    for _ in range(3):
        compiled(*args)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            compiled(*args)
    return {e.key: e.self_cpu_time_total / e.count for e in prof.key_averages() if e.key.startswith("graph_")}


def main(argv: list[str] | None = None) -> int:
    import torch._inductor.config as inductor_config

    from scratch_transformer.model import _ReLUFromOutput

    p = argparse.ArgumentParser(prog="python -m benchmarks.inductor_bool_mask", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shape", type=int, nargs=3, default=(16, 64, 512), metavar=("B", "L", "D_FF"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    inductor_config.cpp.enable_kernel_profile = True  # each generated kernel a profiler event
    B, L, d_ff = args.shape
    x = torch.randn(B, L, d_ff)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"threads {args.threads}, [{B}, {L}, {d_ff}] float32")
    print("part 1: one inductor kernel (self µs per call)")
    for name, fn in (("x > 0 -> bool", lambda t: t > 0), ("x > 0 -> uint8", lambda t: (t > 0).to(torch.uint8)),
                     ("relu(x) + 1 -> float", lambda t: torch.relu(t) + 1)):
        times = kernel_times(compile_fresh(fn), x)
        print(f"  {name:22s} {sum(times.values()):9.1f}  {sorted(times)}")

    d_model = 128
    lin1, lin2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
    h = torch.randn(B, L, d_model, requires_grad=True)
    grad = torch.randn(B, L, d_model)
    print("part 2: feed-forward block, forward + backward (µs per step; kernels: self µs per call)")
    for name, act in (("torch.relu", torch.relu), ("_ReLUFromOutput", _ReLUFromOutput.apply)):
        def ffn(t: torch.Tensor, act: Callable = act) -> torch.Tensor:
            return lin2(act(lin1(t)))

        compiled = compile_fresh(ffn)
        kernels = kernel_times(compiled, h)  # the forward kernels of the training graph (h requires grad)
        for label, fn in (("eager", ffn), ("compiled", compiled)):
            t = Timer("fn(h).backward(grad)", globals={"fn": fn, "h": h, "grad": grad},
                      num_threads=args.threads).blocked_autorange(min_run_time=1.0)
            print(f"  {name:16s} {label:9s} {t.median * 1e6:9.1f}")
        print(f"  {name:16s} forward kernels {({k[8:]: round(v) for k, v in kernels.items()})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
