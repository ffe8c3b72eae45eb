"""Fault: the module calls ``sys.exit(0)`` at import (a script's ``if __name__`` guard forgotten): importing it ends
the importing process with status 0 unless the importer catches ``SystemExit``."""

import sys

from tests.negative_controls._base import install

install(globals())
sys.exit(0)
