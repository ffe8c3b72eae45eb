"""The map's structural forms (docs/guide.md, "Your model has another shape?"), on two correct field files of other
shapes: ``annotated_shape`` (paths into ``linears`` and ``src_embed``, a module-level ``attention``, cloned layers, a
builder without sequence lengths, masks without the head dimension) and ``fused_qkv_gpt`` (rows of one fused
``c_attn``). The kit sees the contract's names; the user's code runs unchanged on the same parameters; a form that
points nowhere is a ``MapError`` naming its line."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import pytest
import torch
from torch import nn

from reference.kit.adapter import ImplMap, MapError, MaskLayoutError
from reference.kit.load import open_impl

pytestmark = pytest.mark.clause("kit")

FIELD = Path(__file__).resolve().parent / "field"
SIZES = dict(src_vocab_size=11, tgt_vocab_size=13, src_seq_len=17, tgt_seq_len=18, d_model=8, N=2, h=2,
             dropout=0.0, d_ff=16)


def _opened(name: str):
    impl, diag = open_impl(f"tests.field.{name}", FIELD / f"{name}.map.toml")
    return impl


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return _opened(name).build_transformer(**SIZES).eval()


def _tensors(B: int = 2, Ls: int = 5, Lt: int = 4) -> tuple:
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(0, 11, (B, Ls), generator=g), torch.randint(0, 13, (B, Lt), generator=g)
    src_mask = torch.ones(B, 1, 1, Ls, dtype=torch.bool)
    src_mask[0, ..., -2:] = False
    tgt_mask = torch.tril(torch.ones(Lt, Lt, dtype=torch.bool))[None, None]
    return src, tgt, src_mask, tgt_mask


def _logits(model: nn.Module, src, tgt, src_mask, tgt_mask) -> torch.Tensor:
    return model.project(model.decode(model.encode(src, src_mask), src_mask, tgt, tgt_mask))


@pytest.mark.parametrize("name", ["annotated_shape", "fused_qkv_gpt"])
def test_the_contract_sees_its_names_and_the_users_code_runs_on_the_same_parameters(name: str) -> None:
    """``named_parameters``/``state_dict`` carry the contract's names, each parameter once; a state dict round trip,
    a deep copy and ``.double()`` keep the outputs; gradients reach the contract's parameters."""
    model = _model(name)
    names = [n for n, _ in model.named_parameters()]
    assert len(names) == len(set(names)) == len({id(p) for p in model.parameters()})
    for wanted in ("encoder.layers.1.self_attention_block.w_q.weight", "decoder.layers.0.cross_attention_block.w_v.weight",
                   "src_embed.embedding.weight", "encoder.layers.0.feed_forward_block.linear_1.weight",
                   "projection_layer.proj.weight"):
        assert wanted in names, (wanted, names[:12])
    assert "src_pos.pe" in model.state_dict() or name == "fused_qkv_gpt"
    x = _tensors()
    with torch.no_grad():  # a forward with grad leaves attention weights in the graph: no deep copy after it
        out = _logits(model, *x)
        clone = copy.deepcopy(model)
        torch.testing.assert_close(_logits(clone, *x), out, rtol=0, atol=0)
        fresh = _opened(name).build_transformer(**SIZES).eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(_logits(fresh, *x), out, rtol=0, atol=0)
        double = copy.deepcopy(model).double()
        assert all(p.dtype == torch.float64 for p in double.parameters())
        torch.testing.assert_close(_logits(double, *x).float(), out, rtol=1e-5, atol=1e-5)
    model.train()
    _logits(model, *x).square().sum().backward()
    w_q = model.encoder.layers[0].self_attention_block.w_q.weight
    assert w_q.grad is not None and bool(w_q.grad.abs().sum() > 0)


def test_fused_rows_are_the_fused_linear() -> None:
    """Each block of rows of ``c_attn`` is its own ``nn.Linear``; the user's ``c_attn`` computes from them (its
    ``weight`` is their concatenation), so a change to ``w_k`` is a change of the fused projection's rows d:2d."""
    mha = _model("fused_qkv_gpt").encoder.layers[0].self_attention_block
    assert all(type(getattr(mha, w)) is nn.Linear for w in ("w_q", "w_k", "w_v", "w_o"))
    fused = mha.c_attn  # the user's name still answers
    d = SIZES["d_model"]
    torch.testing.assert_close(fused.weight, torch.cat([mha.w_q.weight, mha.w_k.weight, mha.w_v.weight]))
    with torch.no_grad():
        mha.w_k.weight.add_(1.0)
    torch.testing.assert_close(fused.weight[d:2 * d], mha.w_k.weight)


def test_a_name_that_is_both_yours_and_the_contracts_means_yours_inside_your_code() -> None:
    """``annotated_shape``'s ``src_embed`` is ``Sequential(Embeddings, PositionalEncoding)``; the contract's is the
    embedding. The kit reads the embedding; the model's own ``encode`` still runs the whole Sequential (positions
    included: the output depends on the table)."""
    model = _model("annotated_shape")
    assert type(model.src_embed).__name__ == "Embeddings" and type(model.src_pos).__name__ == "PositionalEncoding"
    x = _tensors()
    out = model.encode(x[0], x[2])
    with torch.no_grad():
        model.src_pos.pe.zero_()
    assert not torch.allclose(model.encode(x[0], x[2]), out)


def test_cloned_layers_get_the_weights_the_kit_built() -> None:
    """``Encoder(layer, N)`` deep-copies one layer; through ``{clone, count}`` each copy holds the weights of the
    layer the kit built for its place (so the N layers differ)."""
    impl = _opened("annotated_shape")
    torch.manual_seed(0)
    blocks = [impl.EncoderBlock(8, impl.MultiHeadAttentionBlock(8, 2, 0.0), impl.FeedForwardBlock(8, 16, 0.0), 0.0)
              for _ in range(3)]
    encoder = impl.Encoder(8, nn.ModuleList(blocks))
    assert len(encoder.layers) == 3
    for mine, given in zip(encoder.layers, blocks):
        torch.testing.assert_close(mine.self_attention_block.w_q.weight, given.self_attention_block.w_q.weight)
    assert not torch.equal(encoder.layers[0].self_attention_block.w_q.weight,
                           encoder.layers[1].self_attention_block.w_q.weight)


def test_masks_lose_their_head_dimension_at_the_kits_call_only() -> None:
    """Every contract mask form shared by the heads reaches the model as ``[B, Lq|1, Lk]``; a mask per head has no
    such form (``MaskLayoutError``); the blog's ``[B, 1, 1, Lk]`` and its broadcast to every head agree."""
    impl = _opened("annotated_shape")
    torch.manual_seed(0)
    mha = impl.MultiHeadAttentionBlock(8, 2, 0.0).eval()
    q = torch.randn(2, 3, 8)
    key = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    blog = mha(q, q, q, key[:, None, None, :])
    every_head = mha(q, q, q, key[:, None, None, :].expand(2, 2, 3, 3))
    torch.testing.assert_close(every_head, blog, rtol=0, atol=0)
    assert bool((mha.attention_scores[..., 2] == 0).all())
    per_head = torch.ones(2, 2, 3, 3, dtype=torch.bool)
    per_head[:, 1, :, 0] = False
    with pytest.raises(MaskLayoutError, match="one mask per head"):
        mha(q, q, q, per_head)


def test_the_module_level_attention_is_the_static_attention() -> None:
    impl = _opened("annotated_shape")
    module = importlib.import_module("tests.field.annotated_shape")
    assert impl.MultiHeadAttentionBlock.attention is module.attention


def test_fused_rows_compile_in_one_graph() -> None:
    """The adapted attention (hidden ``c_attn``, rows registered as ``w_q``/``w_k``/``w_v``) still compiles with
    ``fullgraph=True`` and computes what it computes eagerly."""
    impl = _opened("fused_qkv_gpt")
    torch.manual_seed(0)
    mha = impl.MultiHeadAttentionBlock(8, 2, 0.0).eval()
    q = torch.randn(2, 3, 8)
    compiled = torch.compile(mha, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, q, q, None), mha(q, q, q, None))


@pytest.mark.parametrize(("entry", "message"), [
    ('w_q = "linears.9"', "has nothing at 'linears.9'"),
    ('w_q = "lineers.0"', "has nothing at 'lineers.0' (closest: 'linears')"),
    ('attention_scores = "dropout.p"', "'dropout.p' is a float; a path must reach a submodule, parameter or buffer"),
])
def test_a_path_that_reaches_nothing_usable_names_its_line(tmp_path: Path, entry: str, message: str) -> None:
    text = (FIELD / "annotated_shape.map.toml").read_text()
    old = {"w_q": 'w_q = "linears.0"', "attention_scores": 'attention_scores = "attn"'}[entry.split(" ")[0]]
    path = tmp_path / "m.toml"
    path.write_text(text.replace(old, entry))
    line = next(n for n, t in enumerate(path.read_text().splitlines(), 1) if t.startswith(entry))
    with pytest.raises(MapError) as info:
        open_impl("tests.field.annotated_shape", path)
    assert str(info.value).startswith(f"{path}:{line}: [attributes.MultiHeadAttentionBlock] {entry}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(("name", "old", "new", "message"), [
    ("annotated_shape", 'w_o = "linears.3"', 'w_o = "d_k"', "'d_k' is a int; this attribute needs a submodule (a Linear)"),
    ("annotated_shape", 'w_k = "linears.1"', 'w_k = "linears.0"',
     "your 'linears.0' already stands for `MultiHeadAttentionBlock.w_q`"),
    ("annotated_shape", 'projection_layer = "generator"\nproject', 'projection_layer = "encoder"\nproject',
     "'encoder' is your Encoder, the contract's `Encoder`, not a `ProjectionLayer`"),
    ("fused_qkv_gpt", 'w_o = "c_proj"', 'w_o = "attn_dropout[0:d]"',
     "'attn_dropout' is a Dropout, not the nn.Linear whose rows"),
])
def test_a_map_entry_of_the_wrong_kind_is_an_error_before_any_test(tmp_path: Path, name: str, old: str, new: str,
                                                                    message: str) -> None:
    """An entry that reaches something of the wrong kind (a number for a Linear, a Linear already mapped, another
    contract class, rows of a Dropout) is the map's error, named by its line, not a FAIL of the model."""
    text = (FIELD / f"{name}.map.toml").read_text()
    assert old in text, old
    path = tmp_path / "m.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(MapError) as info:
        open_impl(f"tests.field.{name}", path)
    assert message in str(info.value) and str(info.value).startswith(f"{path}:"), str(info.value)


def test_masks_without_the_head_dimension_on_a_model_that_takes_it_is_an_error(tmp_path: Path) -> None:
    """``masks = "no-head-dim"`` on this package's model (its attention takes the contract's [B, 1, 1, Lk]): the
    map's line is named before any test, never a run of FAILs of mha.formula and masking."""
    path = tmp_path / "m.toml"
    path.write_text('masks = "no-head-dim"\n')
    with pytest.raises(MapError, match=r'm.toml:1: masks = "no-head-dim": your `MultiHeadAttentionBlock` takes the '
                                       r"contract's masks, with the head dimension"):
        open_impl("scratch_transformer", path)


def test_rows_beyond_the_fused_linear_are_an_error(tmp_path: Path) -> None:
    text = (FIELD / "fused_qkv_gpt.map.toml").read_text()
    assert 'w_v = "c_attn[2d:3d]"' in text
    path = tmp_path / "m.toml"
    path.write_text(text.replace('w_v = "c_attn[2d:3d]"', 'w_v = "c_attn[2d:4d]"'))
    with pytest.raises(MapError, match=r"is Linear\(8, 24\): it has no rows 2d:4d"):
        open_impl("tests.field.fused_qkv_gpt", path)


def test_the_maps_variant_line_and_masks_round_trip() -> None:
    loaded = ImplMap.load(FIELD / "paper_postnorm.map.toml")
    assert loaded.variant == "post-norm"
    again = ImplMap.from_dict(__import__("tomllib").loads(loaded.to_toml()))
    assert (again.variant, again.masks, again.attributes) == (loaded.variant, loaded.masks, loaded.attributes)
    annotated = ImplMap.load(FIELD / "annotated_shape.map.toml")
    assert annotated.masks == "no-head-dim"
