"""The kit on learner-style code: the field set (``tests/field/``), model files that differ from the contract the way
real ones do (renamed classes, attributes and arguments, biases, scalar gains, the walkthrough's divergences, one
or two real bugs each; ``tests/field/catalogue.json`` says which).

On every file the kit must: raise no uncaught exception; name every API difference with its closest match; map it
(the diagnosis's proposal, and the file's own ``.map.toml``); flag every real bug; and raise no alarm on what the
contract allows. The whole-suite run of each file, and its time, are in ``docs/field.md``.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reference.kit.adapter import ImplMap
from reference.kit.diagnose import diagnose
from tests.field._cards import card_status

pytestmark = pytest.mark.clause("kit")

FIELD = Path(__file__).parent / "field"
CATALOGUE = json.loads((FIELD / "catalogue.json").read_text())
NAMES = sorted(CATALOGUE)
def _module(name: str):
    return importlib.import_module(f"tests.field.{name}")


def test_field_catalogue_lists_every_file() -> None:
    files = sorted(p.stem for p in FIELD.glob("*.py") if not p.name.startswith("_"))
    assert files == NAMES
    assert all((FIELD / f"{n}.map.toml").exists() for n in NAMES)
    assert sum(bool(CATALOGUE[n]["bugs"]) for n in NAMES) >= 8, "at least 8 files with a real bug"


@pytest.mark.parametrize("name", NAMES)
def test_diagnosis_names_every_api_difference_with_its_closest_match(name: str) -> None:
    """Without a map, the diagnosis finds each catalogued class, argument and attribute difference, with the
    file's own name as its closest match, and leaves nothing unmapped."""
    diag = diagnose(_module(name))
    proposed = diag.proposed
    missed = []
    for entry in CATALOGUE[name]["api"]:
        kind, where, contract, yours = entry["kind"], entry["where"], entry["contract"], entry["yours"]
        got = (proposed.classes.get(contract) if kind == "class" else
               proposed.arguments.get(where, {}).get(contract) if kind == "argument" else
               proposed.attributes.get(where, {}).get(contract))
        if got != yours:
            missed.append(f"{kind} {where}.{contract}: catalogue {yours!r}, diagnosis {got!r}")
    assert not missed, f"{name}: " + "; ".join(missed) + "\n" + "\n".join(diag.lines())
    assert not diag.unresolved(), f"{name}: unresolved " + "; ".join(f.line() for f in diag.unresolved())


@pytest.mark.parametrize("name", NAMES)
def test_the_files_own_map_agrees_with_the_proposal(name: str) -> None:
    """The map a user would write (``<name>.map.toml``) and the one the kit proposes reach the same names."""
    user = ImplMap.load(FIELD / f"{name}.map.toml")
    diag = diagnose(_module(name), user)
    assert not diag.unresolved(), f"{name}: " + "; ".join(f.line() for f in diag.unresolved())
    assert not diag.unaccepted(), f"{name}: deviations its map leaves out: " + "; ".join(
        f.line() for f in diag.unaccepted())


#: Where the localiser's first divergence must fall for each buggy file (a path prefix in the contract model), from
#: the catalogue's bugs: the first bug in execution order, or the block a misplaced residual or a shared block feeds.
LOCALISED = {"blog_verbatim": "src_pos", "from_video": "src_pos", "one_letter_off": "src_embed",
             "einsum_heads": "encoder.layers.0.self_attention_block",
             "hf_names": "encoder.layers.0.self_attention_block", "sublayer_style": "encoder.layers.0",
             "minimal": "encoder", "seq2seq_notes": "decoder.layers.0.cross_attention_block",
             "harvard_annotated": "encoder.layers.0.residual_connections.0.norm",
             # its builder drops d_ff: the references cannot be built to its architecture, so the whole-model row
             # stops at build.structure before any comparison (no divergence to localise)
             "gordic_style": None}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_report_localises_each_bug_to_its_component(name: str) -> None:
    """The report on the whole model (float64, CPU), through the file's map: a correct file passes, a buggy one
    fails with its first divergence in the component of its first bug."""
    from reference import report

    rep = report.sweep(f"tests.field.{name}", components=["transformer"], devices=["cpu"],
                       dtypes={"cpu": ["float64"]}, seed=0, impl_map=FIELD / f"{name}.map.toml")
    card = {r["clause"]: r["status"] for r in rep.card().rows()}
    if not CATALOGUE[name]["bugs"]:
        assert rep.passed, f"{name}: a correct file fails the report"
        assert "FAIL" not in card.values(), f"{name}: the report's card fails a correct file: {card}"
        return
    assert not rep.passed, f"{name}: the report misses its bugs"
    if LOCALISED[name] is None:
        assert any("not reached because of build.structure" in r.error for r in rep.results), rep.results
        return
    assert rep.first_divergence is not None, f"{name}: the report localises nothing"
    assert card["transformer.compose"] == "FAIL", f"{name}: the report's card: {card}"
    assert rep.first_divergence.startswith(LOCALISED[name]), (
        f"{name}: first divergence {rep.first_divergence}, expected in {LOCALISED[name]} "
        f"({CATALOGUE[name]['bugs'][0]['component']})")


@pytest.mark.slow
def test_cards_of_the_field_set_flag_every_bug_and_nothing_else(tmp_path: Path) -> None:
    """Each file through its own map on the card selection (``tests/field/_cards.py``): the run ends without an
    internal error; every clause a catalogued bug breaks is FAIL; the files with no bug and no deviation FAIL
    nothing but the API clauses (no alarm on what the contract allows: biases, reordered arguments, renames); and
    each card equals ``tests/field/expected/<name>.json`` (regenerate with ``python -m tests.field._cards
    --expected NAME...`` and review the diff)."""
    out = subprocess.run([sys.executable, "-m", "tests.field._cards", "--out", str(tmp_path), *NAMES],
                         capture_output=True, text=True, cwd=FIELD.parent.parent)
    statuses = dict(line.split()[1:3] for line in out.stdout.splitlines() if line.startswith("@@ "))
    assert set(statuses) == set(NAMES), out.stdout[-3000:] + out.stderr[-3000:]
    problems = []
    for name in NAMES:
        if statuses[name] not in ("0", "1"):
            problems.append(f"{name}: pytest exit {statuses[name]} (an internal error or a usage error)")
            continue
        card = card_status(tmp_path / f"{name}.card.json")
        expected = json.loads((FIELD / "expected" / f"{name}.json").read_text())
        problems += [f"{name}: {c} is {card.get(c)!r}, expected {want!r}" for c, want in expected.items()
                     if card.get(c) != want]
        entry = CATALOGUE[name]
        problems += [f"{name}: bug not flagged: {b['clause']} ({b['what']})" for b in entry["bugs"]
                     if card.get(b["clause"]) != "FAIL"]
        if not entry["bugs"] and not entry["deviations"]:
            problems += [f"{name}: false alarm on {c}" for c, v in card.items()
                         if v == "FAIL" and not c.startswith("api.")]
    assert not problems, "\n".join(problems)


#: A correct model with one fused query/key/value projection ``qkv = nn.Linear(d, 3d)`` in place of ``w_q``/``w_k``/
#: ``w_v``: the map reaches it by rows (``w_q = "qkv[0:d]"``), and the diagnosis proposes them.
FUSED_QKV = '''
from tests.negative_controls._base import install

install(globals(), [
    ("model.py", "self.w_q = nn.Linear(d_model, d_model, bias=False, device=device, dtype=dtype)",
     "self.qkv = nn.Linear(d_model, 3 * d_model, bias=False, device=device, dtype=dtype)"),
    ("model.py", "        self.w_k = nn.Linear(d_model, d_model, bias=False, device=device, dtype=dtype)\\n", ""),
    ("model.py", "        self.w_v = nn.Linear(d_model, d_model, bias=False, device=device, dtype=dtype)\\n", ""),
    ("model.py", "self.w_q(q)", "nn.functional.linear(q, self.qkv.weight.chunk(3)[0])"),
    ("model.py", "self.w_k(k)", "nn.functional.linear(k, self.qkv.weight.chunk(3)[1])"),
    ("model.py", "self.w_v(v)", "nn.functional.linear(v, self.qkv.weight.chunk(3)[2])"),
])
'''
#: The same with the fused projection a bare ``nn.Parameter`` (``nn.MultiheadAttention``'s ``in_proj_weight``): no
#: map form reaches the rows of a parameter that is not an ``nn.Linear``'s.
FUSED_PARAMETER = FUSED_QKV.replace(
    "self.qkv = nn.Linear(d_model, 3 * d_model, bias=False, device=device, dtype=dtype)",
    "self.qkv = nn.Parameter(nn.init.xavier_uniform_(torch.empty(3 * d_model, d_model, device=device, dtype=dtype)))"
).replace("self.qkv.weight.chunk", "self.qkv.chunk")


def _kit(tmp_path: Path, module: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{FIELD.parent.parent}", "CI": "true"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--impl", module, "-ra",
                          *args], capture_output=True, text=True, cwd=FIELD.parent.parent, env=env)
    return out.returncode, out.stdout + out.stderr


def test_a_half_mappable_model_gets_black_box_verdicts(tmp_path: Path) -> None:
    """A model no map can reach fully (a fused ``qkv`` parameter): the diagnosis test fails naming the missing
    projections, the black-box tests run and pass (it is correct), every other test is skipped as not reached; no
    error."""
    (tmp_path / "fused_parameter.py").write_text(FUSED_PARAMETER)
    code, text = _kit(tmp_path, "fused_parameter", "tests/test_contract.py", "tests/test_blackbox.py",
                      "tests/test_masking.py")
    assert code == 1, text[-3000:]
    assert "`MultiHeadAttentionBlock` has no `w_q`" in text, text[-3000:]
    assert "FAILED tests/test_contract.py::test_api_diagnosis[api.attributes]" in text
    assert text.count("FAILED ") == 1 and " error" not in text.splitlines()[-1], text[-3000:]
    assert "not reached because of api.attributes" in text
    passed = int(text.splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 6, f"black-box tests did not run: {text.splitlines()[-1]}"


def test_a_fused_linear_is_reached_through_the_proposed_rows(tmp_path: Path) -> None:
    """The same model with an ``nn.Linear(d, 3d)``: the diagnosis proposes ``w_q = "qkv[0:d]"`` and so on and the run
    goes through them (only the diagnosis test fails, for the unaccepted deviation); with the proposed map saved
    as the user's file, the run is clean (exit 0)."""
    (tmp_path / "fused_qkv.py").write_text(FUSED_QKV)
    code, text = _kit(tmp_path, "fused_qkv", "tests/test_contract.py", "tests/test_masking.py",
                      "tests/test_equivalence_oracle.py", "-m", "smoke or blackbox")
    assert code == 1 and text.count("FAILED ") == 1, text[-3000:]
    assert "FAILED tests/test_contract.py::test_api_diagnosis[api.attributes]" in text, text[-3000:]
    for row in ('w_q = "qkv[0:d]"', 'w_k = "qkv[d:2d]"', 'w_v = "qkv[2d:3d]"'):
        assert row in text, text[-3000:]
    assert "not reached" not in text, text[-3000:]
    (tmp_path / "m.toml").write_text('[attributes.MultiHeadAttentionBlock]\nw_q = "qkv[0:d]"\nw_k = "qkv[d:2d]"\n'
                                     'w_v = "qkv[2d:3d]"\n')
    code, text = _kit(tmp_path, "fused_qkv", f"--impl-map={tmp_path / 'm.toml'}", "tests/test_contract.py",
                      "tests/test_masking.py", "tests/test_equivalence_oracle.py", "-m", "smoke or blackbox")
    assert code == 0, text[-3000:]
