"""Smoke-tier cards of the positive controls that are expected to fail some clauses (``EXPECTED_FAIL_CLAUSES``).

``python -m tests.positive_controls._cards [--expected] [NAME...]`` runs the smoke tier (``-m smoke``, the ``ci``
profile, ``--device cpu``) on each such control twice, with every dtype and with ``--dtypes float32,float64``, and
prints (or, with ``--expected``, writes to ``tests/positive_controls/expected/NAME.json``) the card's status per
clause: ``{"all": {...}, "float32,float64": {...}}``. ``tests/test_positive_controls.py`` re-runs them in CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests import positive_controls

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: The two runs of a card: every dtype, and the user who never runs 16-bit.
MODES = {"all": [], "float32,float64": ["--dtypes", "float32,float64"]}


def with_expected_failures() -> list[str]:
    return [n for n in positive_controls.control_names()
            if getattr(positive_controls.load_control(n), "EXPECTED_FAIL_CLAUSES", ())]


def smoke_cards(name: str) -> dict[str, dict]:
    """{mode: {"exit": pytest's exit status, "card": {clause: status}}} of the smoke tier on one control."""
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="positive-card-") as tmp:
        for mode, extra in MODES.items():
            path = Path(tmp) / f"{mode}.json"
            proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "smoke", "-q", "-p", "no:cacheprovider",
                                   "-p", "no:xdist", "--device", "cpu", "--impl", positive_controls.dotted(name),
                                   "--card-json", str(path), *positive_controls.variant_args(name), *extra],
                                  cwd=ROOT, capture_output=True, text=True,
                                  env={**__import__("os").environ, "CI": "true"})
            card = {r["clause"]: r["status"] for r in json.loads(path.read_text())["clauses"]} if path.exists() else {}
            out[mode] = {"exit": proc.returncode, "card": card, "tail": (proc.stdout + proc.stderr)[-1500:]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*")
    p.add_argument("--expected", action="store_true", help="write tests/positive_controls/expected/NAME.json")
    args = p.parse_args(argv)
    for name in args.names or with_expected_failures():
        cards = {mode: r["card"] for mode, r in smoke_cards(name).items()}
        text = json.dumps(cards, indent=1) + "\n"
        if args.expected:
            (HERE / "expected" / f"{name}.json").write_text(text)
        print(f"@@ {name}\n{text}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
