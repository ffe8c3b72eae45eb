"""Both sides of the LayerNorm offset test's allowance (docs/tolerances.md, issue 24).

    python -m benchmarks.ln_offset_allowance [--cases N] [--seed S] [--trials T]
    python -m benchmarks.ln_offset_allowance --verdicts IMPL[,IMPL...] [--cases N]

Rows as ``layer_norm_rows(scales_=("offset",))`` draws them (1-6 rows of 1e4 + U[-1, 1] noise in float32, gains in
[0.5, 1.5], shifts in [-0.5, 0.5]), ``N`` cases per d in {2, 3, 4, 8, 16, 32, 48, 64}, for four correct float32
LayerNorms (corrected two-pass, textbook two-pass, ``torch.var_mean``, ``F.layer_norm``) and three wrong ones (the
walkthrough's ``(x - mean) / (std_unbiased + eps)``, eps = 1e-5, gain x 1.001). Prints per d, at the offset rows:
the largest error, and the largest / smallest ``(error - floor) / spread`` (what ``LN_COND_FACTOR`` must cover, the
row's Monte Carlo spread at float32 ``u`` over ``T`` trials); off the offset (``(x - 1e4) * LN_OFFSET_NOISE_SCALE``):
the largest / smallest error over the error-ratio allowance (``2 x F.layer_norm's error + floor``).

``--verdicts``: the body of ``test_layer_normalization_accurate_with_large_offset_in_float32`` itself on each
implementation module (``--impl`` names), ``N`` draws at every d from 2 to 64: how many pass, fail at the offset
rows, fail off the offset, and the d at which any passes.
"""

from __future__ import annotations

import argparse
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from reference.judge import conditioning, tolerances
from reference.oracles import numpy_ref
from reference.kit.weights import CONTRACT_EPS, to_numpy

Norm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
EPS = CONTRACT_EPS
NOISE_SCALE = 2.0 ** -4  # tests/test_invariances.py LN_OFFSET_NOISE_SCALE
DS = (2, 3, 4, 8, 16, 32, 48, 64)


def _corrected(x, a, b, eps=EPS):
    c = x - x.mean(-1, keepdim=True)
    c = c - c.mean(-1, keepdim=True)
    return torch.addcmul(b, c * torch.rsqrt((c * c).mean(-1, keepdim=True) + eps), a)


def _textbook(x, a, b):
    m = x.mean(-1, keepdim=True)
    return a * ((x - m) / torch.sqrt(((x - m) ** 2).mean(-1, keepdim=True) + EPS)) + b


def _var_mean(x, a, b):
    v, m = torch.var_mean(x, -1, unbiased=False, keepdim=True)
    return torch.addcmul(b, (x - m) * torch.rsqrt(v + EPS), a)


def _blog(x, a, b):
    c = x - x.mean(-1, keepdim=True)
    return torch.addcmul(b, c / (x.std(-1, keepdim=True) + EPS), a)


NORMS: dict[str, Norm] = {
    "corrected two-pass": _corrected, "textbook two-pass": _textbook, "torch.var_mean": _var_mean,
    "F.layer_norm": lambda x, a, b: F.layer_norm(x, (x.shape[-1],), a, b, EPS),
    "WRONG walkthrough": _blog, "WRONG eps=1e-5": lambda x, a, b: _corrected(x, a, b, 1e-5),
    "WRONG gain x 1.001": lambda x, a, b: _corrected(x, a * 1.001, b),
}


def verdicts(impls: list[str], cases: int, seed: int) -> None:
    """Count the offset test's verdicts per implementation over ``cases`` draws at every d in 2..64."""
    import importlib

    import tests.test_invariances as module

    module.note = lambda *a, **k: None  # the body outside Hypothesis
    body = module.test_layer_normalization_accurate_with_large_offset_in_float32.hypothesis.inner_test
    for name in impls:
        impl, counts, passing = importlib.import_module(name), {"pass": 0, "offset": 0, "noise": 0}, set()
        for d in range(2, 65):
            for case in range(cases):
                rng = np.random.default_rng([seed, d, case, 1])
                x = rng.uniform(-1, 1, (int(rng.integers(1, 7)), d)).astype(np.float32).astype(np.float64) + 1e4
                try:
                    body(impl, "cpu", ("offset", x), int(rng.integers(0, 2**31 - 1)))
                    counts["pass"] += 1
                    passing.add(d)
                except AssertionError as failure:
                    counts["offset" if "at offset 1e4" in str(failure).splitlines()[0] else "noise"] += 1
        print(f"{name}: {counts} (d with a pass: {sorted(passing) if len(passing) < 63 else 'all'})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=conditioning.TRIALS)
    parser.add_argument("--verdicts", default="", help="comma list of implementation modules")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.verdicts:
        verdicts(args.verdicts.split(","), args.cases, args.seed)
        return
    u = conditioning.unit_roundoff(torch.float32)
    stats = {name: {d: ([], [], []) for d in DS} for name in NORMS}  # (error, error/spread, off-offset margin)
    for d in DS:
        for case in range(args.cases):
            rng = np.random.default_rng([args.seed, d, case])
            x = rng.uniform(-1, 1, (int(rng.integers(1, 7)), d)).astype(np.float32).astype(np.float64) + 1e4
            a32 = torch.tensor(0.5 + rng.random(d), dtype=torch.float32)
            b32 = torch.tensor(rng.random(d) - 0.5, dtype=torch.float32)
            x32 = torch.tensor(x, dtype=torch.float32)
            for offset, rows in ((True, x32), (False, (x32 - 1e4) * NOISE_SCALE)):
                def oracle(rows: torch.Tensor = rows) -> np.ndarray:
                    return numpy_ref.layer_norm(to_numpy(rows), to_numpy(a32), to_numpy(b32), EPS)
                o = oracle()
                floor = tolerances.floor(torch.float32, float(np.abs(o).max()))
                spread = conditioning.sensitivity(oracle, u, trials=args.trials).numpy() if offset else None
                torch_err = float(np.abs(NORMS["F.layer_norm"](rows, a32, b32).double().numpy() - o).max())
                for name, norm in NORMS.items():
                    err = np.abs(norm(rows, a32, b32).double().numpy() - o)
                    if offset:
                        stats[name][d][0].append(float(err.max()))
                        stats[name][d][1].append(float((np.clip(err - floor, 0, None) / spread).max()))
                    else:
                        stats[name][d][2].append(float(err.max()) / (tolerances.K * torch_err + floor))
    print(f"{args.cases} cases per d, TRIALS={args.trials}, LN_COND_FACTOR={conditioning.LN_COND_FACTOR:g}")
    for label, k, fmt in (("largest error at the offset", 0, "{:.1e}"),
                          ("error / spread at the offset: largest / smallest", 1, "{:.2f}"),
                          ("off the offset, error / allowance: largest / smallest", 2, "{:.3g}")):
        print(f"\n{label}")
        for name in NORMS:
            cells = [fmt.format(max(stats[name][d][k])) + ("" if k == 0 else "/" + fmt.format(min(stats[name][d][k])))
                     for d in DS]
            print(f"  {name:20s} " + "  ".join(f"d{d}:{c}" for d, c in zip(DS, cells)))


if __name__ == "__main__":
    main()
