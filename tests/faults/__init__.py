"""Fault injection of the kit itself (issue 32): faulty implementations and bad kit inputs, and the verdict each
must get.

Each module here other than the tools (``cases``, ``table``) is a faulty implementation of the contract, built like
the negative controls (``tests.negative_controls._base.install``: the correct base with one textual change), whose
docstring says the fault. Unlike a negative control's bug, a fault attacks the *kit*: a constructor that raises, a
forward that never returns, an import that exits the process or changes torch's global state, a result of the wrong
type. ``cases.py`` is the table of cases (module, options, command, the exit status and first message the kit must
give); ``tests/test_faults.py`` runs each in a subprocess, and ``python -m tests.faults.table`` prints the table of
what the kit does today (docs/measurements/faults-before-issue-32.md). The ``*.map.toml`` files are bad
``--impl-map`` inputs for the correct model.
"""
