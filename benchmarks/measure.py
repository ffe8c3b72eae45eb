"""Timing (``torch.utils.benchmark``, alternating, medians of rounds) and peak memory of one step.

Timing: each round times every engine once with ``Timer.blocked_autorange(min_run_time)`` (its median over
blocks), the engine order reversed every other round so drift and neighbours' load hit all engines alike. An
engine's time is the median of its round medians; its ratio to the baseline is the median of the per-round
ratios ``t_baseline / t_engine`` (a throughput ratio: > 1 = faster than the baseline), paired within a round.

Peak memory: CUDA ``torch.cuda.max_memory_allocated`` during one step, above what was allocated before it.
CPU has no allocator statistics, so one step runs under ``torch.profiler`` with ``profile_memory=True`` and
the peak of the running sum of its allocation/free events is taken: the most tensor memory that step held at
once beyond what was live before it (parameters and inputs excluded; activations, workspaces and, in "train",
gradients included). Allocator caching, fragmentation and non-tensor memory are not counted.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils import benchmark

from .workloads import Engine


@dataclass(frozen=True)
class Timing:
    """Round medians (seconds per step) of one engine, and its paired ratios to the baseline."""

    rounds: tuple[float, ...]
    ratios: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> float:
        """Relative spread of the round medians: (max - min) / median."""
        return (max(self.rounds) - min(self.rounds)) / self.median


def time_engines(engines: list[Engine], baseline: str, *, rounds: int, min_run_time: float, threads: int,
                 timer: Callable[[], float] = time.perf_counter, warmup: int = 2) -> dict[str, Timing]:
    """Alternating, paired timing of ``engines``; ratios against the engine named ``baseline``.

    ``timer`` is wall-clock by default; ``time.thread_time`` (CPU time of the calling thread, meaningful with one
    thread) discounts the time other processes hold the core on a shared machine.
    """
    for engine in engines:
        for _ in range(warmup):
            engine.step()
    times: dict[str, list[float]] = {e.name: [] for e in engines}
    for r in range(rounds):
        for engine in engines if r % 2 == 0 else engines[::-1]:
            t = benchmark.Timer(stmt="step()", globals={"step": engine.step}, num_threads=threads, timer=timer,
                                description=engine.name)
            times[engine.name].append(t.blocked_autorange(min_run_time=min_run_time).median)
    base = times[baseline]
    return {name: Timing(tuple(t), tuple(b / s for b, s in zip(base, t))) for name, t in times.items()}


def peak_memory(engine: Engine, device: torch.device) -> int:
    """Peak bytes of tensor memory one step holds beyond what was allocated before it (see module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        engine.step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        engine.step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type()
              == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak
