"""The equivalence report (``python -m reference.report``): all PASS on the implementation, FAIL with the broken
component named first on a negative control, exit status, JSON, reproduction commands, plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

from reference.spec import variants
from reference import report
from reference.spec.contract import DEFAULT_IMPL
from tests.conformance.blog_api import write_blog_api_impl
from tests.support import torch_threads

pytestmark = pytest.mark.clause("kit")

ROOT = Path(__file__).resolve().parents[1]
#: Two of the report's configurations (N = 2; odd d_model) keep the in-process sweeps short (CI runs the full
#: report from the command line).
SMALL = (report.CONFIGS[0], report.CONFIGS[2])
CROSS_KV = "tests.negative_controls.decoder_cross_attn_self_kv"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one torch thread is fastest, and fair to the other test processes."""
    with torch_threads(1):
        yield


def _strict_json(text: str) -> dict:
    """Parse, refusing NaN/Infinity (the report writes them as strings)."""
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def _failures(rep: report.Report) -> str:
    lines = []
    for r in rep.results:
        if not r.passed:
            detail = r.error or f"{r.outcome.verdict.line()}; {r.outcome.detail}"
            lines.append(f"{r.component} {r.config} {r.device} {r.dtype}: {detail}")
            if r.outcome and r.outcome.localization and not r.outcome.localization.ok:
                lines.append(r.outcome.localization.summary())
    return "\n".join(lines)


@pytest.fixture(autouse=True)
def _known_models_are_pre_norm(request: pytest.FixtureRequest):
    """The tests that run the report on known models (the controls, field files, this package) judge them as what
    they are, the blog's pre-norm layout, whatever the run's ``--variant``; the tests of the implementation under
    test (``impl``, ``impl_name``) keep the run's variant."""
    if {"impl", "impl_name"} & set(request.fixturenames):
        yield
        return
    old = variants.variant()
    variants.use_variant(variants.PRE_NORM)
    try:
        yield
    finally:
        variants.use_variant(old)


def test_report_all_pass_for_the_implementation(impl_name: str, impl_map_path: str | None, device: str) -> None:
    """Every component x dtype of the device's default set passes for the implementation under test (through its
    map)."""
    rep = report.sweep(impl_name, components=list(report.COMPONENTS), devices=[device],
                       dtypes={device: report.default_dtypes(device)}, seed=0, configs=SMALL, impl_map=impl_map_path)
    assert rep.passed, _failures(rep)
    assert rep.first_divergence is None
    assert {r.component for r in rep.results} == set(report.COMPONENTS)


#: Negative controls and what the report must say: the component rows that fail and the first divergence.
CONTROLS = {
    "attn_no_scale": ({"multi_head_attention/none", "multi_head_attention/causal", "encoder_block", "transformer"},
                      "encoder.layers.0.self_attention_block"),
    "pe_sin_cos_swapped": ({"positional_encoding", "transformer"}, "src_pos"),
    "residual_post_norm": ({"encoder_block", "transformer"}, "encoder.layers.0.self_attention_block"),
    "projection_log_softmax": ({"transformer"}, "projection_layer"),
}


@pytest.mark.parametrize("control", list(CONTROLS))
def test_report_fails_on_a_negative_control_and_names_it(control: str) -> None:
    """The report fails the broken component's rows (and only rows that involve it), and names the first
    divergence of the full model."""
    failing, first = CONTROLS[control]
    components = ["positional_encoding", "multi_head_attention/none", "multi_head_attention/causal", "feed_forward", "layer_norm", "encoder_block",
                  "transformer"]
    rep = report.sweep(f"tests.negative_controls.{control}", components=components, devices=["cpu"],
                       dtypes={"cpu": ["float64"]}, seed=0, configs=SMALL[:1])
    assert not rep.passed
    assert {r.component for r in rep.results if not r.passed} == failing, _failures(rep)
    assert rep.first_divergence == first, _failures(rep)


def test_report_cli_exit_status_json_and_reproduction(tmp_path: Path) -> None:
    """``python -m reference.report`` on a broken implementation: exit 1, the FAIL block names the first
    divergence and prints the command that reproduces the row, JSON carries ``first_divergence``; that command
    run again gives the same numbers."""
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = ["--impl", CROSS_KV, "--device", "cpu", "--dtype", "float64", "--component", "transformer",
            "--component", "multi_head_attention/cross", "--json", str(out), "--no-progress"]
    result = subprocess.run([sys.executable, "-m", "reference.report", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    command = (f"python -m reference.report --impl {CROSS_KV} --component transformer --device cpu "
               f"--dtype float64 --seed 0")
    assert f"  reproduce: {command}\n" in text, text
    assert "first divergence at decoder.layers.0.cross_attention_block" in text, text
    data = _strict_json(out.read_text())
    assert data["schema"] == report.SCHEMA and data["passed"] is False
    assert data["first_divergence"] == "decoder.layers.0.cross_attention_block"
    rows = {(r["component"], r["dtype"]): r for r in data["rows"]}
    assert rows[("multi_head_attention/cross", "float64")]["passed"] is True  # the control's attention block itself is right
    assert rows[("transformer", "float64")]["passed"] is False
    assert rows[("transformer", "float64")]["command"] == command

    again = tmp_path / "again.json"
    status = report.main(command.split()[3:] + ["--json", str(again), "--no-progress"])
    assert status == 1
    first, second = _strict_json(out.read_text()), _strict_json(again.read_text())
    pick = [r for r in first["results"] if r["component"] == "transformer"]
    assert [(r["max_abs"], r["detail"]) for r in pick] == \
        [(r["max_abs"], r["detail"]) for r in second["results"]]


def test_report_reproduce_line_carries_every_option_that_changes_the_numbers() -> None:
    """``Report.command``: the implementation and its ``--impl-map``, the row, the seed, and ``--variant`` /
    ``--compile`` / ``--threads`` when the sweep used them; quoted for a shell."""
    rep = report.Report("my model", 3, ["cpu"], {"cpu": ["float32"]}, ["layer_norm"], [])
    assert rep.command("layer_norm", "cpu", "float32") == (
        "python -m reference.report --impl 'my model' --component layer_norm --device cpu --dtype float32 --seed 3")
    rep = report.Report("m", 0, ["cuda"], {"cuda": ["float16"]}, ["transformer"], [], impl_map="maps/m.toml",
                        compile="inductor", threads=4)
    assert rep.command("transformer", "cuda", "float16") == (
        "python -m reference.report --impl m --impl-map maps/m.toml --component transformer --device cuda "
        "--dtype float16 --seed 0 --compile inductor --threads 4")
    rep = report.Report("m", 0, ["cpu"], {"cpu": ["float64"]}, ["encoder_block"], [], variant="post-norm")
    assert rep.command("encoder_block", "cpu", "float64") == (
        "python -m reference.report --impl m --variant post-norm --component encoder_block --device cpu "
        "--dtype float64 --seed 0")


def test_report_reproduces_a_mapped_model_from_its_printed_command(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """A model seen through ``--impl-map`` (a field file with a bug): the printed "reproduce:" line keeps the map,
    and that command, run again, gives the same numbers."""
    mapped = ROOT / "tests" / "field" / "one_letter_off.map.toml"
    first, again = tmp_path / "first.json", tmp_path / "again.json"
    status = report.main(["--impl", "tests.field.one_letter_off", "--impl-map", str(mapped), "--device", "cpu",
                          "--dtype", "float64", "--component", "embedding", "--json", str(first), "--no-progress"])
    text = capsys.readouterr().out
    command = (f"python -m reference.report --impl tests.field.one_letter_off --impl-map {mapped} --component "
               f"embedding --device cpu --dtype float64 --seed 0")
    assert status == 1 and f"  reproduce: {command}\n" in text, text
    assert report.main(command.split()[3:] + ["--json", str(again), "--no-progress"]) == 1
    numbers = [[(r["max_abs"], r["detail"]) for r in _strict_json(f.read_text())["results"]] for f in (first, again)]
    assert numbers[0] == numbers[1]


def test_report_json_schema(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--json`` writes strict JSON with the documented keys (docs/report.md); on this package every row passes,
    so exit 0 and every card clause "pass" (a failing report fails this test, naming its failed rows)."""
    out = tmp_path / "r.json"
    status = report.main(["--device", "cpu", "--dtype", "float32", "--component", "layer_norm", "--component",
                          "transformer", "--component", "grad/multi_head_attention", "--json", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    data = _strict_json(out.read_text())
    failed = [f"{r['component']} {r['dtype']}: {r['detail']}" for r in data.get("rows", []) if not r["passed"]]
    assert data["passed"] is True and status == 0, f"the report fails (exit {status}): {failed}\n{printed}"
    assert {"schema", "impl", "seed", "passed", "first_divergence", "torch", "devices", "dtypes", "components",
            "configs", "elapsed_s", "rows", "results", "localization", "card"} <= set(data)
    card = {r["clause"]: r["status"] for r in data["card"]}
    assert {"ln.biased-variance", "transformer.compose", "mha.formula", "numerics.float32"} <= set(card)
    assert all(v == "pass" for v in card.values()), {k: v for k, v in card.items() if v != "pass"}
    row_keys = {"component", "config", "configs", "device", "dtype", "passed", "skipped", "max_abs", "max_rel",
                "torch_abs", "ratio", "rule", "tolerance", "allowed", "margin", "detail", "first_divergence",
                "command", "seconds"}
    assert all(row_keys <= set(r) for r in data["rows"])
    assert len(data["rows"]) == 3 and len(data["results"]) == 3 * len(report.CONFIGS)
    loc = data["localization"]
    assert len(loc) == len(report.CONFIGS) and all({"first_divergence", "local_check", "paths"} <= set(x)
                                                   for x in loc)
    assert "component" in printed and "layer_norm" in printed


def test_report_component_selection(capsys: pytest.CaptureFixture) -> None:
    """An exact name selects one component, a family name its members, globs work, an unknown name is a usage
    error (exit 2)."""
    assert report.select_components(["layer_norm"]) == ["layer_norm"]
    mha = [c for c in report.COMPONENTS if c.startswith("multi_head_attention/")]
    assert report.select_components(["multi_head_attention"]) == mha
    assert report.select_components(["mha"]) == mha  # version 1 names still select their rows
    assert report.select_components(["positions", "grad/mha"]) == ["positional_encoding", "grad/multi_head_attention"]
    assert report.select_components(["mha/causal", "masks"]) == ["causal_mask", "padding_mask",
                                                                "multi_head_attention/causal"]
    assert report.select_components(["grad/*", "embedding"]) == \
        ["embedding"] + [c for c in report.COMPONENTS if c.startswith("grad/")]
    with pytest.raises(ValueError, match="no component matches"):
        report.select_components(["attention"])
    assert report.main(["--component", "attention", "--no-progress"]) == 2
    assert "no component matches" in capsys.readouterr().err


def test_report_runs_are_reproducible_from_the_seed(impl) -> None:
    """The same seed gives the same numbers (a FAIL command reproduces its row); another seed, other inputs."""
    config = report.CONFIGS[0]

    def numbers(seed: int) -> tuple:
        rows = [report.run_one(impl, name, config, "cpu", torch.float32, seed)
                for name in ("multi_head_attention/random", "decoder_block", "grad/multi_head_attention")]
        assert all(r.outcome for r in rows), [r.error for r in rows]
        return tuple(r.outcome.verdict.max_abs for r in rows)

    assert numbers(7) == numbers(7)
    assert numbers(7) != numbers(8)


def test_report_skips_what_a_blog_api_implementation_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           impl_name: str) -> None:
    """An implementation with only the blog's API: the mask-helper rows are SKIP (naming the extra), the numbers
    still pass."""
    if impl_name != DEFAULT_IMPL:
        pytest.skip("the blog-API copy is made from scratch_transformer itself")
    write_blog_api_impl(tmp_path, "blog_api_report_copy")
    monkeypatch.syspath_prepend(str(tmp_path))
    rep = report.sweep("blog_api_report_copy", components=["causal_mask", "padding_mask", "layer_norm",
                                                           "transformer"],
                       devices=["cpu"], dtypes={"cpu": ["float64"]}, seed=0, configs=SMALL[:1])
    assert rep.passed, _failures(rep)
    skipped = {r.component: r.outcome.detail for r in rep.results if r.outcome.skipped}
    assert skipped == {"causal_mask": "skipped: implementation lacks causal_mask",
                       "padding_mask": "skipped: implementation lacks padding_mask"}


def test_report_plots_render(tmp_path: Path) -> None:
    """``--plots DIR`` writes the four PNGs (error heatmap, error by layer, attention, positional table)."""
    pytest.importorskip("matplotlib", reason="matplotlib (the 'plots' extra) is not installed")
    from matplotlib.image import imread

    status = report.main(["--impl", "tests.negative_controls.attn_no_scale", "--device", "cpu", "--dtype", "float64",
                          "--component", "transformer", "--plots", str(tmp_path), "--no-progress"])
    assert status == 1
    for name in ("error_heatmap", "error_by_layer", "attention", "positional_table"):
        path = tmp_path / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        height, width = imread(path).shape[:2]
        assert height >= 300 and width >= 600, (name, height, width)
