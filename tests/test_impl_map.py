"""``--impl-map`` is checked before anything runs: every name it gives must exist (a class or function in the module, a
parameter of its constructor, an attribute of the probe model's instance), every value must have its type; otherwise
a ``MapError`` naming the map's line, which pytest and the report turn into a usage error (exit 4). And the map the
diagnosis proposes never pairs a contract argument with one of yours of another kind (a width with a count)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from torch import nn

from reference.kit.adapter import ImplMap, MapError
from reference.kit.components import SIGNATURES
from reference.kit.diagnose import _contract_kind, _signatures, argument_kind
from reference.kit.load import open_impl

pytestmark = pytest.mark.clause("kit")

ROOT = Path(__file__).resolve().parent.parent
FIELD = ROOT / "tests" / "field"
IMPL = "tests.field.one_letter_off"  # its classes, arguments and attributes are all renamed; its map maps them
MAP = (FIELD / "one_letter_off.map.toml").read_text()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


def _faulty(tmp_path: Path, old: str, new: str) -> Path:
    """one_letter_off's own map with one entry changed."""
    assert old in MAP
    return _write(tmp_path, MAP.replace(old, new))


def _line(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(text))


def test_a_class_mapped_to_a_name_the_module_lacks_names_the_line_and_the_closest(tmp_path: Path) -> None:
    """Issue 32, bug 1: was "closest match: `MultiHeadAttention` -> mapped", then 13 clauses FAIL (AttributeError)."""
    path = _faulty(tmp_path, 'MultiHeadAttentionBlock = "MultiHeadAttention"',
                   'MultiHeadAttentionBlock = "MultiHeadAtention"')
    with pytest.raises(MapError) as err:
        open_impl(IMPL, path)
    line = _line(path, "MultiHeadAttentionBlock =")
    assert str(err.value) == (
        f'{path}:{line}: [classes] MultiHeadAttentionBlock = "MultiHeadAtention": the module {IMPL} has no class or '
        "function 'MultiHeadAtention' (closest: 'MultiHeadAttention')")


def test_an_attribute_mapped_to_a_missing_name_is_an_error_after_the_probe_build(tmp_path: Path) -> None:
    """Issue 32, bug 2: was accepted silently (exit 0)."""
    path = _faulty(tmp_path, 'alpha = "gamma"', 'alpha = "gama"')
    with pytest.raises(MapError) as err:
        open_impl(IMPL, path)
    assert str(err.value).startswith(f'{path}:{_line(path, "alpha =")}: [attributes.LayerNormalization] alpha = '
                                     '"gama": the probe model\'s `LayerNormalization` (your `LayerNorm`) has no')
    assert str(err.value).endswith("'gama' (closest: 'gamma')")


def test_an_argument_mapped_to_a_parameter_the_constructor_lacks(tmp_path: Path) -> None:
    path = _faulty(tmp_path, '[arguments.MultiHeadAttentionBlock]\nh = "heads"',
                   '[arguments.MultiHeadAttentionBlock]\nh = "n_heads"')
    with pytest.raises(MapError, match=r"m\.toml:\d+: \[arguments\.MultiHeadAttentionBlock\] h = \"n_heads\": "
                                       r"MultiHeadAttention\(d_model, heads, dropout\) takes no parameter 'n_heads' "
                                       r"\(closest: 'heads'\)"):
        open_impl(IMPL, path)


@pytest.mark.parametrize(("text", "line", "message"), [
    ("classes = 3\n", 1, "classes = 3: expected a table of contract class or function = your name, got int 3"),
    ('# mine\n[classes]\nInputEmbeddings = "X"\n\n[arguments.MultiHeadAttentionBlock]\nd_model = "d"\nh = 3\n', 7,
     "[arguments.MultiHeadAttentionBlock] h = 3: expected your parameter's name, \"name.i\" (item i of the "
     "nn.Sequential your parameter takes), {clone = \"layer\", count = \"N\"} (for layers) or false, got int 3"),
    ("[arguments.Encoder]\nfeatures = true\n", 2, "[arguments.Encoder] features = true: expected your parameter's"),
    ('[attributes.LayerNormalization]\nalpha = false\n', 2,
     "[attributes.LayerNormalization] alpha = false: expected your attribute's name, a dotted path (\"linears.0\") "
     "or rows of a fused Linear (\"qkv[0:d]\"), got bool false"),
    ('[classes]\nbuild_transformer = ["make_model"]\n', 2,
     "[classes] build_transformer = ['make_model']: expected your class's or function's name (a string), got list"),
    ('[clases]\nEncoder = "E"\n', 1, "[clases]: 'clases' is not a section or top-level key of a map; expected one "
                                     "of ['classes', 'arguments', 'attributes', 'variant', 'masks'] (closest: "
                                     "'classes')"),
    ('masks = "heads"\n', 1, "masks = \"heads\": expected one of ['head-dim', 'no-head-dim'], got str"),
    ('variant = "postnorm"\n', 1, "variant = \"postnorm\": expected one of ['pre-norm', 'post-norm'], got str"),
    ('[attributes.MultiHeadAttentionBlock]\nw_q = "qkv[0:d]"\nw_k = "qkv[2d:3d]"\n', 3,
     "[attributes.MultiHeadAttentionBlock] w_k = \"qkv[2d:3d]\": the rows of 'qkv' must be mapped without gaps or "
     "overlaps from 0 to its last row (rows d:2d are not)"),
    ('[attributes.MultiHeadAttentionBlock]\ndropout = "drop[0:d]"\n', 2,
     "[attributes.MultiHeadAttentionBlock] dropout = \"drop[0:d]\": rows of a fused Linear stand only for a Linear"),
    ('[attributes.MultiHeadAttentionBlock]\nw_q = "qkv[0:q]"\n', 2,
     "[attributes.MultiHeadAttentionBlock] w_q = \"qkv[0:q]\": expected your attribute's name, a dotted path"),
    ('[arguments.Encoder]\nlayers = {clone = "layer"}\n', 2,
     "[arguments.Encoder] layers = {clone = \"layer\"}: expected your parameter's name"),
    ('[attributes.MultiHeadAttentionBlock]\nw_q = "qkv[0:d]"\nw_k = "qkv[0:d]"\n', 3,
     "[attributes.MultiHeadAttentionBlock] w_k = \"qkv[0:d]\": the rows of 'qkv' must be mapped without gaps or "
     "overlaps (rows 0:d are mapped twice)"),
    ('[arguments.FeedForwardBlock]\nd_ff = {clone = "a", count = "b"}\n', 2,
     "[arguments.FeedForwardBlock] d_ff = {clone = \"a\", count = \"b\"}: {clone, count} stands only for the "
     "`layers` of an Encoder or a Decoder"),
    ('[arguments.Transformer]\nsrc_embed = "src_embed.0"\nsrc_pos = "src_embed.0"\n', 3,
     "[arguments.Transformer] src_pos = \"src_embed.0\": item 0 of your 'src_embed' is already `src_embed`"),
    ('[arguments.Transformer]\nsrc_embed = "src_embed.0"\nsrc_pos = "src_embed.7"\n', 3,
     "[arguments.Transformer] src_pos = \"src_embed.7\": the items of your 'src_embed' must be numbered 0 to 1"),
    ('[classes]\nInputEmbeddings = "A"\nMultiHeadAttnBlock = "B"\n', 3,
     "[classes] MultiHeadAttnBlock = \"B\": 'MultiHeadAttnBlock' is not a contract class or function"),
    ('[arguments.Encoder]\nfeatures = "d"\n[arguments.Encoder.x]\n', 3,
     "[arguments.Encoder.x]: 'x' is not one of `Encoder`'s contract arguments; expected one of ['features', 'layers']"),
    ('[arguments]\nEncoder = 3\n', 2, "[arguments] Encoder = 3: expected a table of contract name = your parameter"),
    ('[attributes.Encodr]\nnorm = "n"\n', 1, "[attributes.Encodr]: 'Encodr' is not a contract class with "
                                            "attributes"),
    ('arguments.Encoder.features = 3\n', 1, "[arguments.Encoder] features = 3: expected"),
    ('classes = { Encoder = 3 }\n', 1, "[classes] Encoder = 3: expected your class's or function's name"),
])
def test_wrong_types_and_unknown_keys_name_the_file_and_line(tmp_path: Path, text: str, line: int, message: str
                                                              ) -> None:
    """Issue 32, bug 3: ``classes = 3`` was a pytest INTERNALERROR (TypeError)."""
    path = _write(tmp_path, text)
    with pytest.raises(MapError) as err:
        ImplMap.load(path)
    assert str(err.value).startswith(f"{path}:{line}: {message}"), str(err.value)


def test_names_that_exist_are_accepted_however_they_exist() -> None:
    """A constructor with ``**kwargs`` takes any argument; a plain attribute is an attribute, of the kind the contract
    wants (a number for ``eps``, not a method for ``alpha``); a contract class with no instance in the probe model,
    and a forward's tensor when the forward failed, are not checked."""
    class Norm(nn.Module):
        def __init__(self, **kwargs) -> None:
            super().__init__()
            self.epsilon = 1e-6

        def scale(self) -> None: ...

    module = types.ModuleType("tiny")
    module.Norm = Norm
    ImplMap(classes={"LayerNormalization": "Norm"},
            arguments={"LayerNormalization": {"features": "anything"}}).check_module(module)
    norm = _answering_to("LayerNormalization", Norm)
    ImplMap(attributes={"LayerNormalization": {"eps": "epsilon"}}).check_attributes(norm)
    with pytest.raises(MapError, match="'scale' is a method; this attribute needs a parameter"):  # of the wrong kind
        ImplMap(attributes={"LayerNormalization": {"alpha": "scale"}}).check_attributes(norm)
    with pytest.raises(MapError, match="has no attribute, parameter, buffer, submodule or method 'gain'"):
        ImplMap(attributes={"LayerNormalization": {"alpha": "gain"}}).check_attributes(norm)
    ImplMap(attributes={"LayerNormalization": {"alpha": "gain"}}).check_attributes(nn.Linear(2, 2))  # no instance
    scores = ImplMap(attributes={"MultiHeadAttentionBlock": {"attention_scores": "attn"}})
    mha = _answering_to("MultiHeadAttentionBlock", nn.Module)
    with pytest.raises(MapError, match="'attn'"):
        scores.check_attributes(mha)  # the forward ran and left no `attn`
    scores.check_attributes(mha, forwarded=False)  # the forward failed: nothing to tell from


def _answering_to(contract: str, base: type) -> nn.Module:
    """An instance of ``base`` whose class answers to ``contract``, as the adapter's classes do."""
    return type(base.__name__, (base,), {"_contract_name": contract})()


def test_every_field_map_still_loads_with_its_module() -> None:
    """The maps of ``tests/field/`` point only at names their modules have (their runs: tests/test_field.py)."""
    for path in sorted(FIELD.glob("*.map.toml")):
        module, diag = open_impl(f"tests.field.{path.name.removesuffix('.map.toml')}", path)
        assert diag.user, path


def test_the_proposed_map_never_pairs_arguments_of_different_kinds() -> None:
    """Issue 32, bug 4: an Annotated-Transformer-style ``Encoder(layer, N)`` had the contract's ``features`` (a
    width) proposed as ``N`` (a layer count). Now ``layers`` pairs with ``layer`` and ``features`` stays unmatched,
    with a finding that says why."""
    class Encoder(nn.Module):
        def __init__(self, layer, N) -> None:
            super().__init__()

    module = types.ModuleType("annotated")
    module.Encoder = Encoder
    findings, proposed = _signatures(module, ImplMap())
    assert proposed == {"Encoder": {"layers": "layer"}}
    [features] = [f for f in findings if f.contract == "features"]
    assert features.found is None and features.blocking
    assert features.message == ("`Encoder('layer', 'N')` takes no argument for the contract's `features` (a width); "
                                "not mapped to `N` (a count): another kind (map it yourself if it is one)")


def test_argument_kinds_by_name() -> None:
    """Every contract argument has a kind; common spellings of each kind are told apart."""
    assert all(_contract_kind(c, a) for c, args in SIGNATURES.items() for a in args)
    kinds = {"width": ("d_model", "features", "size", "hidden_size", "dim", "d_ff", "n_embd", "head_dim", "ndim",
                       "normalized_shape", "model_dimension"),
             "count": ("N", "h", "num_layers", "n_layers", "layers", "depth", "heads", "num_heads", "n_head",
                       "n_layer", "number_of_heads", "number_of_layers"),
             "rate": ("dropout", "p", "attn_pdrop", "dropout_probability"), "epsilon": ("eps", "layer_norm_eps"),
             "vocabulary size": ("vocab_size", "src_vocab", "ntoken", "trg_vocab_size"),
             "sequence length": ("seq_len", "max_len", "block_size", "src_block_size", "tgt_block_size"),
             "factor": ("width_mult", "mlp_ratio", "expansion_factor")}
    assert {k: [argument_kind(n) for n in names] for k, names in kinds.items()} == {
        k: [k] * len(names) for k, names in kinds.items()}
    assert [argument_kind(n) for n in ("layer", "self_attn", "src_embed", "generator")] == [None] * 4


def test_pytest_run_with_a_faulty_map_is_a_usage_error() -> None:
    """``pytest --impl-map`` with a map that points nowhere: exit 4, the message printed, no test run."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = _faulty(Path(tmp), 'MultiHeadAttentionBlock = "MultiHeadAttention"',
                       'MultiHeadAttentionBlock = "MultiHeadAtention"')
        proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-m",
                               "smoke", "-q", f"--impl={IMPL}", f"--impl-map={path}"], cwd=ROOT, capture_output=True,
                              text=True, env={**os.environ, "CI": "true"})
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "has no class or function 'MultiHeadAtention' (closest: 'MultiHeadAttention')" in proc.stderr, proc.stderr


def test_report_cli_with_a_faulty_map_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from reference import report

    path = _faulty(tmp_path, 'alpha = "gamma"', 'alpha = "gama"')
    assert report.main(["--impl", IMPL, "--impl-map", str(path), "--no-progress", "--component", "layer_norm"]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:") and "'gama' (closest: 'gamma')" in err, err


def test_arguments_paired_by_role_side_and_kind_and_flags_receive_nothing() -> None:
    """nanoGPT's and gordicaleksa's constructors: two counts told apart by their words (``n_layer`` is ``N``,
    ``number_of_heads`` is ``h``), two sequence lengths by their side, a width by being the one left; ``bias=True``
    and ``log_attention_weights=False`` are flags; a contract argument with only optional ones of another kind left
    is left out (``d_ff`` beside ``width_mult=4``), never given to them."""
    def build_model(src_vocab_size, tgt_vocab_size, src_block_size, tgt_block_size, n_embd=512, n_layer=6,
                    n_head=8, dropout=0.1, n_ff=2048, bias=True):
        pass

    def build_transformer_model(model_dimension, src_vocab_size, trg_vocab_size, number_of_heads, number_of_layers,
                                dropout_probability, log_attention_weights=False):
        pass

    class Attention(nn.Module):
        def __init__(self, n_embd, n_head, dropout, bias=True):
            super().__init__()

    class PositionwiseFeedForwardNet(nn.Module):
        def __init__(self, model_dimension, dropout_probability, width_mult=4):
            super().__init__()

    class LayerNorm(nn.Module):
        def __init__(self, ndim, bias=True, eps=1e-6):
            super().__init__()

    module = types.ModuleType("walkthroughs")
    module.Attention, module.PositionwiseFeedForwardNet, module.LayerNorm = Attention, PositionwiseFeedForwardNet, \
        LayerNorm
    module.build_model, module.build_transformer_model = build_model, build_transformer_model
    classes = {"MultiHeadAttentionBlock": "Attention", "FeedForwardBlock": "PositionwiseFeedForwardNet",
               "LayerNormalization": "LayerNorm"}
    findings, proposed = _signatures(module, ImplMap(classes={**classes, "build_transformer": "build_model"}))
    assert proposed["build_transformer"] == {"src_seq_len": "src_block_size", "tgt_seq_len": "tgt_block_size",
                                             "d_model": "n_embd", "N": "n_layer", "h": "n_head", "d_ff": "n_ff"}
    assert proposed["MultiHeadAttentionBlock"] == {"d_model": "n_embd", "h": "n_head"}
    assert proposed["LayerNormalization"] == {"features": "ndim"}
    assert proposed["FeedForwardBlock"] == {"d_model": "model_dimension", "d_ff": False,
                                            "dropout": "dropout_probability"}
    [d_ff] = [f for f in findings if (f.where, f.contract) == ("FeedForwardBlock", "d_ff")]
    assert d_ff.message.endswith("(the kit leaves it out); yours left are optional and of another kind: "
                                 "`width_mult` (a factor)")
    _, proposed = _signatures(module, ImplMap(classes={**classes, "build_transformer": "build_transformer_model"}))
    assert {k: proposed["build_transformer"][k] for k in ("d_model", "N", "h", "dropout", "d_ff")} == {
        "d_model": "model_dimension", "N": "number_of_layers", "h": "number_of_heads",
        "dropout": "dropout_probability", "d_ff": False}
