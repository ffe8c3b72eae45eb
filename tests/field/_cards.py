"""Run the kit on field files and write their conformance cards: ``python -m tests.field._cards [--expected] NAME...``.

Each file runs through its own ``.map.toml`` on the card selection below, in one process (one pytest session per
file), with the ``field`` Hypothesis profile: derandomized like ``ci``, 3 examples per test (the cards must be
stable; the whole-suite runs with the ``ci`` profile are in ``docs/field.md``). ``--expected`` writes the cards to
``tests/field/expected/`` (review the diff: a card changes when the kit's verdict on a file changes); otherwise to
``--out DIR``. Prints ``@@ NAME EXIT`` per file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIELD = Path(__file__).resolve().parent
ROOT = FIELD.parent.parent
#: The modules a card run covers: the API checks, the float64/float32 oracle equivalence of every component,
#: masking, dropout and state, initialisation (what every catalogued bug breaks; the whole suite's verdicts on
#: each file are in docs/field.md), and the own-evidence modules (attention's properties, the wiring of each
#: composite, numerics against the model's own float64, train mode), so the card's FAILs are attributed on evidence.
CARD_MODULES = ("tests/test_contract.py", "tests/test_equivalence_oracle.py", "tests/test_masking.py",
                "tests/test_dropout_state.py", "tests/test_init.py", "tests/test_positional.py",
                "tests/test_attention_own.py",
                "tests/test_wiring.py", "tests/test_numerics_own.py", "tests/test_train_mode.py")
EXAMPLES = 3


def card_status(card_json: Path) -> dict[str, str]:
    """{clause: status} of a card written by ``--card-json``."""
    return {r["clause"]: r["status"] for r in json.loads(card_json.read_text())["clauses"]}


def main(argv: list[str] | None = None) -> int:
    import pytest
    from hypothesis import Phase, settings

    from tests.negative_controls._run import freeze_survivors

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="+")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--expected", action="store_true", help="write tests/field/expected/NAME.json")
    args = p.parse_args(argv)
    settings.register_profile("field", derandomize=True, database=None, max_examples=EXAMPLES, deadline=None,
                              phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target))
    out = FIELD / "expected" if args.expected else args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        card = out / f"{name}.card.json"
        freeze_survivors()  # the sessions' closing full collections skip torch and the earlier sessions' heap
        # --tb=line: the card is the output; a field file's many expected failures cost ~30 ms each as long tracebacks
        status = pytest.main([*CARD_MODULES, "-q", "--tb=line", "-p", "no:cacheprovider", "--device", "cpu",
                              "--no-header", "--hypothesis-profile", "field", "--impl", f"tests.field.{name}",
                              "--impl-map", str(FIELD / f"{name}.map.toml"), "--card-json", str(card)])
        if args.expected:  # keep the verdicts only: the details carry node ids and messages that drift
            (out / f"{name}.json").write_text(json.dumps(card_status(card), indent=1) + "\n")
            card.unlink()
        print("@@", name, int(status), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
