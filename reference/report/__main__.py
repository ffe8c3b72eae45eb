"""``python -m reference.report``."""

import sys

from .cli import main

sys.exit(main())
