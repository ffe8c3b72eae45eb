"""The kit that judges an implementation of the contract, in layers (docs/architecture.md; checked by
``lint-imports``, ``[tool.importlinter]`` in pyproject.toml), lowest first: ``spec`` (the contract and its
clauses), ``oracles`` and ``judge`` (references and comparison, independent of each other), ``kit`` (registry,
adapter, diagnosis, loading, card), ``report`` (the equivalence report and the localiser). A layer imports only
the layers below it. Nothing here imports the implementation under test; it is reached through
``reference.kit.load``.
"""
