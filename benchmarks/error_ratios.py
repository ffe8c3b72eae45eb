"""The distribution of impl_err / torch_err over many examples: ``python -m benchmarks.error_ratios``.

Runs every test of a torch-comparison module (``tests.test_equivalence_torch``, or ``tests.test_gradients``) with
``examples`` Hypothesis examples, recording through the module's ``POLICY`` instead of asserting, and prints per
comparison the percentiles of impl_err / torch_err, how many examples exceed K, the largest impl_err / allowed, the
smallest floor (in eps of the output scale) under which every example passes with K, and the worst example. See
``docs/tolerances.md`` ("Measured: the distribution of impl_err / torch_err").

    python -m benchmarks.error_ratios [examples] [--module tests.test_gradients]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from collections import defaultdict
from types import ModuleType

import numpy as np
import torch
from hypothesis import settings

from reference.judge import tolerances
from reference.judge.compare import error_stats
from reference.kit.load import load_impl

#: What the tests measured: (dtype, "component vs label") -> [(impl_err, torch_err, allowed, floor needed,
#: |impl - torch| / scale)] per example.
Samples = dict[tuple[str, str], list[tuple[float, float, float, float, float]]]
#: (dtype, "component vs label") -> (largest impl_err / allowed, the example's configuration).
Worst = dict[tuple[str, str], tuple[float, dict]]


def recorder(samples: Samples, worst: Worst):
    """A ``POLICY`` that records each comparison's errors into ``samples`` and ``worst`` instead of asserting."""
    def record(actual, torch_out, oracle, *, component, dtype, config, where, label, sensitivity=None):
        del sensitivity  # the gradient policy's conditioning bound: not part of the measured ratio
        expected = oracle()
        impl_err, torch_err = error_stats(actual, expected, where), error_stats(torch_out, expected, where)
        allowed = tolerances.allowed_error(dtype, torch_err.max_abs, impl_err.scale)
        unit = tolerances.eps(dtype) * max(impl_err.scale, 1.0)
        needed = (impl_err.max_abs - tolerances.K * torch_err.max_abs) / unit
        direct = error_stats(actual, torch_out, where).max_abs / max(impl_err.scale, 1.0)
        key = (str(dtype).replace("torch.", ""), f"{component} vs {label}")
        samples[key].append((impl_err.max_abs, torch_err.max_abs, allowed, needed, direct))
        if impl_err.max_abs / allowed > worst.get(key, (0.0, {}))[0]:
            worst[key] = (impl_err.max_abs / allowed, {**config, "impl_err": impl_err.max_abs,
                                                       "torch_err": torch_err.max_abs, "out_scale": impl_err.scale})
    return record


def run_tests(module: ModuleType, examples: int, dtypes: tuple[torch.dtype, ...]) -> None:
    """Every ``test_*`` of ``module`` on the default implementation, on CPU, ``examples`` derandomized examples
    each, in every dtype of ``dtypes`` (a test without a ``dtype`` parameter runs when its name's dtype is in it)."""
    impl = load_impl()
    for name, test in list(vars(module).items()):
        if name.startswith("test_"):
            run = settings(max_examples=examples, derandomize=True, database=None, deadline=None)(test)
            if "dtype" in inspect.signature(test).parameters:
                for dtype in dtypes:
                    run(impl=impl, device="cpu", dtype=dtype)
            elif "float64" not in name or torch.float64 in dtypes:
                run(impl=impl, device="cpu")


def report(samples: Samples, worst: Worst, examples: int) -> None:
    """One row per comparison (percentiles of impl_err / torch_err, > K, err/allowed, floor needed), then the
    worst example of each."""
    print(f"impl_err / torch_err over {examples} examples per comparison (K = {tolerances.K}; 'torch exact': "
          "examples where torch's error is 0, left out of the percentiles); floor needed = smallest FLOOR_EPS "
          "under which every example passes with K")
    print(f"{'dtype':8s} {'comparison':68s} {'n':>4s} {'p50':>5s} {'p90':>5s} {'p99':>5s} {'max':>6s} {'>K':>3s} "
          f"{'torch exact':>11s} {'err/allowed':>11s} {'floor needed':>12s} {'|impl-torch|/scale':>18s}")
    for (dtype, what), rows_ in sorted(samples.items()):
        errs = np.array(rows_)
        measurable = errs[:, 1] > 0
        ratio = errs[measurable, 0] / errs[measurable, 1]
        q = np.percentile(ratio, [50, 90, 99]) if ratio.size else [np.nan] * 3
        print(f"{dtype:8s} {what:68s} {len(errs):4d} {q[0]:5.2f} {q[1]:5.2f} {q[2]:5.2f} "
              f"{(ratio.max() if ratio.size else np.nan):6.2f} {int((ratio > tolerances.K).sum()):3d} "
              f"{int((~measurable).sum()):11d} {float((errs[:, 0] / errs[:, 2]).max()):11.3f} "
              f"{max(0.0, float(errs[:, 3].max())):12.2f} {float(errs[:, 4].max()):18.2e}")
    print("worst example of each comparison (largest impl_err / allowed):")
    for key, (ratio_, config) in sorted(worst.items()):
        print(f"  {key[0]} {key[1]}: {ratio_:.3f} {config}")


def measure_error_ratios(module: ModuleType, examples: int, dtypes: tuple[torch.dtype, ...]) -> None:
    """Run every test of ``module`` with ``examples`` Hypothesis examples, recording instead of asserting through
    ``module.POLICY``, and print the table (docs/tolerances.md)."""
    samples: Samples = defaultdict(list)
    worst: Worst = {}
    module.POLICY = recorder(samples, worst)
    run_tests(module, examples, dtypes)
    report(samples, worst, examples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.error_ratios", description=__doc__.splitlines()[0])
    parser.add_argument("examples", type=int, nargs="?", default=100, help="Hypothesis examples per test")
    parser.add_argument("--module", default="tests.test_equivalence_torch",
                        help="the test module to measure (it routes every comparison through its POLICY)")
    args = parser.parse_args(argv)
    measure_error_ratios(importlib.import_module(args.module), args.examples, (torch.float32, torch.float64))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
