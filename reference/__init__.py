"""Oracles for the contract: float64 NumPy formulas, torch adapters, tolerances and the comparison helper.

Nothing here imports the implementation under test; implementations are reached through ``reference.contract``.
"""
