"""Layer 2 (beside the oracles, independent of them), the judge: error statistics (``errors``), tolerances,
conditioning (Monte Carlo arithmetic), the comparison helpers (``compare``) and the precision diagnosis. Import
only ``reference.spec``."""
