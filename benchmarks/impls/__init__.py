"""Implementations the benchmarks time the suite on (``--impl benchmarks.impls.<name>``); not part of the suite."""
