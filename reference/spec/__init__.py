"""Layer 1, the contract itself: what an implementation must be (``contract``: names, construction, sizes) and what
the kit judges it by (``clauses`` and ``clauses.toml``; ``tomlfile``). Imports nothing else of ``reference``."""
