"""Layer 3, the kit: the component registry (``components``), an implementation's weights (``weights``), its map
onto the contract (``adapter``), the API diagnosis (``findings``, ``diagnose``), opening it (``load``) and the
conformance card (``card``). Imports the layers below (spec, oracles, judge), never ``reference.report``."""
