"""Root test configuration of a clone: the tree first on ``sys.path``, then the suite's plugin (``tests/plugin.py``:
options, profiles, the card; the same plugin ``scratch-transformer-check`` loads on an installed copy)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # run from a bare working tree (e.g. the GPU machine) without installing
    sys.path.insert(0, str(ROOT))

pytest_plugins = ["tests.plugin"]
