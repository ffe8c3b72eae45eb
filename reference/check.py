"""``scratch-transformer-check MODULE [--impl-map FILE] [pytest args...]``: run the installed suite on ``MODULE``
from any directory (the user's own repository, their CI), without a clone of this one.

The suite ships inside the package (``tests/``, with its data files); this runs it with pytest on that installed
copy: ``--rootdir`` its parent (so node ids, and the kill matrix's smoke tier, are the clone's ``tests/...``),
``-c tests/check.ini`` (so no ini file of the user's repository is read), ``-p tests.plugin`` (the suite's options,
profiles and card: what the root ``conftest.py`` loads in a clone), the pytest cache in the current directory, and
``--kit-tests=deselect`` unless ``--kit-tests`` is given (the kit's self-tests check the kit and this repository's
own files, not the user's model). The
current directory is appended to ``sys.path`` (after site-packages, in every xdist worker too, by the plugin), so
``MODULE`` is imported from there and the installed ``tests``/``reference`` stay the ones found. Test paths given
as ``tests/...`` are read in the installed copy. Exit status: pytest's (0 all passed, 1 a test failed, 2 the module
or the map could not be read, 4 a usage error, 5 nothing ran). The top layer of ``reference`` (docs/architecture.md).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

#: The directories the plugin (tests/plugin.py) appends to ``sys.path``, in this process and in xdist workers.
USER_PATH_ENV = "SCRATCH_TRANSFORMER_USER_PATH"
#: Hypothesis's storage directory (its default is ``.hypothesis/`` in the current directory).
HYPOTHESIS_DIR_ENV = "HYPOTHESIS_STORAGE_DIRECTORY"

USAGE = ("usage: scratch-transformer-check MODULE [--impl-map FILE] [pytest args...]\n"
         "  run the installed scratch-transformer suite on MODULE (importable from the current directory), e.g.\n"
         "  scratch-transformer-check my_pkg.model -m smoke\n"
         "  scratch-transformer-check my_pkg.model --impl-map m.toml -n 2 -m 'not slow' --card-json card.json")


def pytest_args(module: str, rest: list[str], suite: Path, cwd: Path) -> list[str]:
    """The pytest command line that runs the installed ``suite`` on ``module`` for a user in ``cwd``."""
    root = suite.parent
    paths = [str(root / a) for a in rest if a.split("::", 1)[0].startswith(("tests/", "tests" + os.sep))]
    others = [a for a in rest if not a.split("::", 1)[0].startswith(("tests/", "tests" + os.sep))]
    kit = [] if any(a == "--kit-tests" or a.startswith("--kit-tests=") for a in rest) else ["--kit-tests=deselect"]
    return ["-c", str(suite / "check.ini"), "--rootdir", str(root), "-p", "tests.plugin",
            "-o", f"cache_dir={cwd / '.pytest_cache'}", "--impl", module, *kit, *others, *(paths or [str(suite)])]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        print(USAGE, file=sys.stdout if args[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 4
    import pytest

    spec = importlib.util.find_spec("tests")  # the installed suite, found without importing it (pytest rewrites it)
    if spec is None or not spec.submodule_search_locations:
        print("scratch-transformer-check: the suite (package 'tests') is not installed", file=sys.stderr)
        return 4
    cwd = Path.cwd()
    suite = Path(next(iter(spec.submodule_search_locations))).resolve()
    os.environ[USER_PATH_ENV] = os.pathsep.join(filter(None, [str(cwd), os.environ.get(USER_PATH_ENV)]))
    # Hypothesis's own files (its example database in the dev/thorough profiles, its unicode cache) go to a folder of
    # the temp directory, not `.hypothesis/` in the user's repository (unless they chose one)
    os.environ.setdefault(HYPOTHESIS_DIR_ENV, str(Path(tempfile.gettempdir()) / "scratch-transformer-hypothesis"))
    # a run killed from outside (CI's timeout) still shows how far it got: stdout line-buffered even in a pipe
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    if str(cwd) not in sys.path:
        sys.path.append(str(cwd))
    return int(pytest.main(pytest_args(args[0], args[1:], suite, cwd)))


if __name__ == "__main__":
    raise SystemExit(main())
