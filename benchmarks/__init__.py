"""Throughput and peak memory of a contract implementation against ``nn.Transformer`` with the same weights.

One command (from the repository root)::

    python -m benchmarks.run [--config small|base|all] [--device cpu|cuda|all] [--compile] [--quick]

See ``docs/performance.md`` for what is timed, how, and the results.
"""
