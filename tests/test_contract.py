"""Every name, argument and attribute of the contract exists exactly so."""

from __future__ import annotations

import inspect
from dataclasses import replace

import pytest
import torch
from torch import nn

from reference.judge.compare import check_output
from reference.kit import components
from reference.kit.adapter import not_taken
from reference.kit.components import COMPONENTS
from reference.kit.components import REQUIRED_NAMES, SIGNATURES
from reference.spec.contract import ModelConfig, build_model
from tests.support import encode_decode_project

BUILD_DEFAULTS = {"d_model": 512, "N": 6, "h": 8, "dropout": 0.1, "d_ff": 2048}


def _positional(obj) -> list[str]:
    params = inspect.signature(obj).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]


#: The clauses the API diagnosis (run at start-up, before any test) judges: one test each, so one deviation FAILs
#: its own clause only. Always in the smoke tier (tests/plugin.py).
DIAGNOSIS_CLAUSES = ("api.names", "api.signatures", "api.attributes", "mha.static-attention", "build.structure",
                     "module.bounded", "module.pure")


@pytest.mark.parametrize("clause_id", [pytest.param(c, marks=pytest.mark.clause(c), id=c) for c in DIAGNOSIS_CLAUSES])
def test_api_diagnosis(diagnosis, clause_id: str) -> None:
    """The API diagnosis (``reference.kit.diagnose``, run before any test) of one clause: every class name,
    constructor argument and attribute of the contract found, or mapped by the user's ``--impl-map``; the probe
    model built (an exception names its line); its import, build and forward within the watchdog's time and the
    memory cap (module.bounded); its import leaving torch's global state alone (module.pure). Each deviation is named
    with the closest match found; the map the kit proposed for them is in the run's header."""
    left = [f for f in diagnosis.unaccepted() if f.clause == clause_id]
    proposed = diagnosis.proposed.to_toml() if diagnosis.proposed and clause_id.startswith("api.") else ""
    assert not left, (f"{clause_id}: " + "\n".join(f.message for f in left)
                      + ("\nproposed --impl-map (used for this run):\n" + proposed if proposed else ""))


@pytest.mark.clause("ln.per-feature-affine")
def test_layer_norm_gain_and_shift_are_per_feature(impl) -> None:
    """``alpha`` and ``bias`` are parameters of shape [features]: a scalar gain (``torch.ones(1)``) is a deviation."""
    norm = impl.LayerNormalization(8)
    shapes = {name: tuple(getattr(norm, name).shape) for name in ("alpha", "bias")}
    assert shapes == {"alpha": (8,), "bias": (8,)}, f"LayerNormalization(8) parameters: {shapes}"


@pytest.mark.clause("api.names", "api.signatures")
@pytest.mark.parametrize("name", REQUIRED_NAMES)
def test_contract_name_has_the_blogs_signature(impl, name: str) -> None:
    assert _positional(getattr(impl, name)) == list(SIGNATURES[name])


@pytest.mark.clause("build.structure")
def test_build_transformer_defaults_are_the_papers_base_model(impl) -> None:
    params = inspect.signature(impl.build_transformer).parameters
    assert {k: params[k].default for k in BUILD_DEFAULTS} == BUILD_DEFAULTS
    assert inspect.signature(impl.LayerNormalization).parameters["eps"].default == 1e-6


@pytest.mark.clause("build.structure")
def test_build_transformer_without_sizes_builds_the_papers_base_model(impl) -> None:
    """Called with the four required arguments only, ``build_transformer`` builds d_model=512, N=6, h=8, d_ff=2048,
    dropout=0.1 (built on the ``meta`` device: no memory, no time)."""
    with torch.device("meta"):
        model = impl.build_transformer(11, 13, 16, 16)
    assert model.src_embed.embedding.weight.shape[-1] == 512
    assert len(model.encoder.layers) == 6 and len(model.decoder.layers) == 6
    block = model.decoder.layers[0]
    assert (block.self_attention_block.h, block.cross_attention_block.h) == (8, 8)
    assert block.feed_forward_block.linear_1.weight.shape == (2048, 512)
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.1}


#: Every size ``build_transformer`` takes, distinct from each other and from the defaults (512, 6, 8, 2048) at every
#: case, so a size that does not reach a module, or reaches the wrong one, shows. Ids kept from before ``h`` and
#: ``d_model`` joined (the kill matrix records them).
REACH_SIZES = [pytest.param(1, 2, 7, 10, id="1-7"), pytest.param(2, 4, 16, 12, id="2-16"),
               pytest.param(3, 7, 5, 14, id="3-5")]


#: Sizes at which every kind of sharing is possible: equal vocabularies and lengths (tied embeddings, one table),
#: two layers of each kind, d_ff != d_model.
SHARING_CFG = ModelConfig(src_vocab_size=17, tgt_vocab_size=17, src_seq_len=9, tgt_seq_len=9, d_model=8, N=2, h=2,
                          dropout=0.0, d_ff=12)


@pytest.mark.smoke
@pytest.mark.clause("build.structure")
def test_build_transformer_shares_no_parameter_between_contract_paths(impl) -> None:
    """The structure is really there: N distinct layers of each kind, separate source and target embeddings, every
    residual its own norm, every attention block its own projections. No parameter of the built model is reachable
    under two paths (``named_parameters(remove_duplicate=False)``), at sizes where any sharing would fit (equal
    vocabularies). The contract (the blog's builder) ties nothing; sharing a parameterless module (a Dropout)
    changes no computation and is allowed."""
    model = build_model(impl, SHARING_CFG)
    paths: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        paths.setdefault(id(p), []).append(name)
    shared = [names for names in paths.values() if len(names) > 1]
    assert not shared, (f"build_transformer{SHARING_CFG.kwargs()} built a model whose parameters are shared between "
                        "contract paths (each must be its own): "
                        + "; ".join(" is ".join(names) for names in shared[:6])
                        + (f"; and {len(shared) - 6} more" if len(shared) > 6 else ""))


@pytest.mark.clause("build.structure")
@pytest.mark.parametrize("N, h, d_ff, d_model", REACH_SIZES)
def test_build_transformer_builds_the_asked_layers_and_width(impl, N: int, h: int, d_ff: int, d_model: int) -> None:
    """``build_transformer(..., d_model, N, h, d_ff)`` holds N encoder and N decoder blocks of distinct weights,
    every attention block with ``h`` heads of ``d_model // h``, each feed-forward block ``linear_1`` [d_ff, d_model]
    and ``linear_2`` [d_model, d_ff]; the embeddings, positions and projection take their vocabulary and length from
    the call. The references take the sizes from the constructor call (``numpy_ref.StructureMismatch`` skips the
    comparisons when a model holds others)."""
    cfg = ModelConfig(src_vocab_size=23, tgt_vocab_size=29, src_seq_len=11, tgt_seq_len=13, d_model=d_model, N=N,
                      h=h, dropout=0.0, d_ff=d_ff)
    call = f"build_transformer(d_model={d_model}, N={N}, h={h}, d_ff={d_ff})"
    model = build_model(impl, cfg)
    for name in ("encoder", "decoder"):
        blocks = list(getattr(model, name).layers)
        distinct = len({id(b) for b in blocks})
        assert (len(blocks), distinct) == (N, N), (
            f"{call} built the {name} with {len(blocks)} layer(s), {distinct} of distinct weights")
        shapes = {(tuple(b.feed_forward_block.linear_1.weight.shape), tuple(b.feed_forward_block.linear_2.weight.shape))
                  for b in blocks}
        assert shapes == {((d_ff, d_model), (d_model, d_ff))}, f"{call} built {name} feed-forward weights {shapes}"
        kinds = ("self_attention_block",) + (("cross_attention_block",) if name == "decoder" else ())
        heads = {f"{name}.layers.{i}.{kind}": (getattr(b, kind).h, getattr(b, kind).d_k, getattr(b, kind).d_model)
                 for i, b in enumerate(blocks) for kind in kinds}
        asked = (h, d_model // h, d_model)
        wrong = {path: sizes for path, sizes in heads.items() if sizes != asked}
        assert not wrong, f"{call}: attention blocks whose (h, d_k, d_model) is not {asked}: {wrong}"
    ends = {"src_embed.vocab_size": (model.src_embed.vocab_size, 23),
            "tgt_embed.vocab_size": (model.tgt_embed.vocab_size, 29),
            "src_pos.seq_len": (model.src_pos.seq_len, 11), "tgt_pos.seq_len": (model.tgt_pos.seq_len, 13),
            "projection_layer.proj.weight": (tuple(model.projection_layer.proj.weight.shape), (29, d_model))}
    # a builder that takes no sequence lengths (the map's `src_seq_len = false`) builds tables of its own length: they
    # must hold at least the asked positions
    free = {f"{end}_pos.seq_len" for end in ("src", "tgt") if f"{end}_seq_len" in not_taken(impl.build_transformer)}
    wrong = [f"{path} {got} (asked {want})" for path, (got, want) in ends.items()
             if (got < want if path in free else got != want)]
    assert not wrong, ("build_transformer(src_vocab_size=23, tgt_vocab_size=29, src_seq_len=11, tgt_seq_len=13) "
                       f"built {', '.join(wrong)}")


#: A model whose rates are all the builder's: sizes distinct from each other and from the defaults.
RATE_CFG = ModelConfig(src_vocab_size=23, tgt_vocab_size=29, src_seq_len=11, tgt_seq_len=13, d_model=12, N=3, h=4,
                       dropout=0.0, d_ff=20)


def _rates_other_than(model: nn.Module, p: float) -> list[str]:
    """``"<path> has p=<rate>"`` for every ``nn.Dropout`` of ``model`` whose rate is not ``p``."""
    return [f"{name} has p={m.p}" for name, m in model.named_modules() if isinstance(m, nn.Dropout) and m.p != p]


@pytest.mark.clause("build.structure")
def test_build_transformer_dropout_zero_makes_train_mode_deterministic(impl) -> None:
    """Built with ``dropout=0.0``, the model in train mode gives bit-identical ``encode``/``decode``/``project``
    outputs from two RNG states: the rate reaches every module the builder builds (The Annotated Transformer's
    ``make_model`` never passes ``dropout`` to its attention blocks: ``Dropout(p=0.1)`` stays active in each)."""
    model = build_model(impl, RATE_CFG).train()
    gen = torch.Generator().manual_seed(0)
    # Source and target of one length: a decoder that wires its cross-attention wrongly still runs (that is
    # decoder.block's to judge, not this test's).
    src = torch.randint(1, RATE_CFG.src_vocab_size, (2, 8), generator=gen)
    tgt = torch.randint(1, RATE_CFG.tgt_vocab_size, (2, 8), generator=gen)
    src_mask = (torch.arange(8)[None, :] < torch.tensor([8, 5])[:, None])[:, None, None, :]  # (B, 1, 1, Ls)
    tgt_mask = torch.tril(torch.ones(1, 8, 8, dtype=torch.bool))  # (1, Lt, Lt)
    runs = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for seed in (1, 2):
            torch.manual_seed(seed)
            outs = encode_decode_project(model, src, tgt, src_mask, tgt_mask)
            runs.append([check_output(o, component=f"Transformer.{part}", config={"mode": "train", "dropout": 0.0})
                         for part, o in zip(("encode", "decode", "project"), outs)])
    # equal_nan: a NaN in the same place twice is deterministic (its cause is judged elsewhere)
    differ = [f"{part} (max diff {float((a - b).nan_to_num(nan=0.0).abs().max()):.3g})"
              for part, a, b in zip(("encode", "decode", "project"), *runs)
              if not torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)]
    live = _rates_other_than(model, 0.0)
    assert not differ, (
        "built with dropout=0.0, the model is not deterministic in train mode: "
        + (", ".join(live) if live else "no nn.Dropout has p != 0, so a functional dropout or another random op "
           "is live")
        + f"; the outputs differ between two RNG states in {', '.join(differ)}")


@pytest.mark.clause("build.structure")
def test_build_transformer_dropout_reaches_every_dropout_module(impl) -> None:
    """Built with ``dropout=0.3``, every ``nn.Dropout`` in the model has ``p == 0.3`` (none keeps a default of its
    own, 0.1, or another module's rate)."""
    model = build_model(impl, replace(RATE_CFG, dropout=0.3))
    dropouts = [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]
    wrong = _rates_other_than(model, 0.3)
    assert not wrong, f"built with dropout=0.3, {len(wrong)} of {len(dropouts)} nn.Dropout modules: {', '.join(wrong)}"


@pytest.mark.clause("api.attributes")
def test_model_attributes_are_the_contracts(impl) -> None:
    model = build_model(impl, ModelConfig(d_model=8, N=1, h=2, d_ff=16, dropout=0.1))
    for attr in ("encoder", "decoder", "src_embed", "tgt_embed", "src_pos", "tgt_pos", "projection_layer"):
        assert isinstance(getattr(model, attr), nn.Module), attr
    emb = model.src_embed
    assert (emb.d_model, emb.vocab_size, type(emb.embedding)) == (8, 11, nn.Embedding)
    pos = model.src_pos
    assert (pos.d_model, type(pos.dropout)) == (8, nn.Dropout)
    # a builder that takes no sequence length (the map's `src_seq_len = false`) sizes the table itself: at least 16
    free = "src_seq_len" in not_taken(impl.build_transformer)
    assert pos.seq_len >= 16 if free else pos.seq_len == 16, f"src_pos.seq_len {pos.seq_len} (asked 16)"
    assert "pe" in dict(pos.named_buffers()) and "pe" in pos.state_dict() and "pe" not in dict(pos.named_parameters())
    block = model.decoder.layers[0]
    for attr in ("self_attention_block", "cross_attention_block", "feed_forward_block", "residual_connections"):
        assert hasattr(block, attr), attr
    mha = block.cross_attention_block
    assert (mha.d_model, mha.h, mha.d_k) == (8, 2, 4)
    assert all(type(getattr(mha, w)) is nn.Linear for w in ("w_q", "w_k", "w_v", "w_o"))
    assert type(mha.dropout) is nn.Dropout and mha.dropout.p == 0.1
    ff = block.feed_forward_block
    assert (type(ff.linear_1), type(ff.dropout), type(ff.linear_2)) == (nn.Linear, nn.Dropout, nn.Linear)
    residual = block.residual_connections[0]
    assert type(residual.dropout) is nn.Dropout and hasattr(residual.norm, "alpha") and residual.norm.eps == 1e-6
    assert hasattr(model.encoder, "layers") and hasattr(model.encoder, "norm") and hasattr(model.decoder, "norm")
    assert type(model.projection_layer.proj) is nn.Linear
    assert callable(impl.MultiHeadAttentionBlock.attention)
    assert isinstance(inspect.getattr_static(impl.MultiHeadAttentionBlock, "attention"), staticmethod)


@pytest.mark.clause("extra.factory-kwargs")
def test_factory_kwargs_place_parameters_and_buffers(impl) -> None:
    """device=/dtype= keywords (an extra) create every parameter and buffer on that device, and every floating one in
    that dtype (``dtype=`` casts floating tensors only, as torch's own factory keywords do: ``nn.BatchNorm1d(dtype=
    torch.float64)`` keeps its int64 ``num_batches_tracked``)."""
    params = inspect.signature(impl.build_transformer).parameters
    if "dtype" not in params:
        pytest.skip("implementation lacks device=/dtype= constructor keywords")
    model = impl.build_transformer(5, 6, 4, 4, d_model=8, N=1, h=2, d_ff=16, dtype=torch.float64, device="cpu")
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    wrong = {k: (str(t.device), t.dtype) for k, t in tensors.items()
             if t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float64)}
    assert tensors and not wrong, f"build_transformer(..., device='cpu', dtype=torch.float64): tensors elsewhere: {wrong}"


def _module_factories(impl) -> dict[str, object]:
    """Each contract constructor with small arguments, called with the given factory keywords."""
    def mha(**kw):
        return impl.MultiHeadAttentionBlock(8, 2, 0.0, **kw)

    def ff(**kw):
        return impl.FeedForwardBlock(8, 16, 0.0, **kw)

    return {
        "InputEmbeddings": lambda **kw: impl.InputEmbeddings(8, 10, **kw),
        "PositionalEncoding": lambda **kw: impl.PositionalEncoding(8, 4, 0.0, **kw),
        "LayerNormalization": lambda **kw: impl.LayerNormalization(8, **kw),
        "FeedForwardBlock": ff,
        "MultiHeadAttentionBlock": mha,
        "ResidualConnection": lambda **kw: impl.ResidualConnection(8, 0.0, **kw),
        "EncoderBlock": lambda **kw: impl.EncoderBlock(8, mha(**kw), ff(**kw), 0.0, **kw),
        "Encoder": lambda **kw: impl.Encoder(8, nn.ModuleList([impl.EncoderBlock(8, mha(**kw), ff(**kw), 0.0, **kw)]),
                                             **kw),
        "DecoderBlock": lambda **kw: impl.DecoderBlock(8, mha(**kw), mha(**kw), ff(**kw), 0.0, **kw),
        "Decoder": lambda **kw: impl.Decoder(
            8, nn.ModuleList([impl.DecoderBlock(8, mha(**kw), mha(**kw), ff(**kw), 0.0, **kw)]), **kw),
        "ProjectionLayer": lambda **kw: impl.ProjectionLayer(8, 7, **kw),
        "build_transformer": lambda **kw: impl.build_transformer(5, 6, 4, 4, 8, 1, 2, 0.0, 16, **kw),
    }


@pytest.mark.clause("extra.factory-kwargs")
@pytest.mark.parametrize("name", ["InputEmbeddings", "PositionalEncoding", "LayerNormalization", "FeedForwardBlock",
                                  "MultiHeadAttentionBlock", "ResidualConnection", "EncoderBlock", "Encoder",
                                  "DecoderBlock", "Decoder", "ProjectionLayer", "build_transformer"])
def test_factory_kwargs_place_every_tensor_on_the_given_device_and_dtype(impl, name: str) -> None:
    """``device=``/``dtype=`` on each constructor put all of its tensors there: checked on the ``meta`` device, which
    every build of torch has, so a dropped ``device=`` fails on a CPU-only machine too."""
    if "dtype" not in inspect.signature(impl.build_transformer).parameters:
        pytest.skip("implementation lacks device=/dtype= constructor keywords")
    for kw in ({"device": "meta"}, {"device": "meta", "dtype": torch.float16}, {"dtype": torch.float64}):
        module = _module_factories(impl)[name](**kw)
        tensors = dict(module.named_parameters()) | dict(module.named_buffers())
        want_device = torch.device(kw.get("device", "cpu"))
        want_dtype = kw.get("dtype", torch.get_default_dtype())
        wrong = {k: (t.device, t.dtype) for k, t in tensors.items()
                 if t.device != want_device or (t.is_floating_point() and t.dtype != want_dtype)}  # floating only
        assert tensors and not wrong, f"{name}(**{kw}): tensors not on {want_device}/{want_dtype}: {wrong}"


@pytest.mark.clause("extra.factory-kwargs")
def test_transformer_factory_kwargs_move_the_parts_it_is_given(impl) -> None:
    """``Transformer(parts..., device=, dtype=)`` takes the keywords as every constructor does; it has no tensors of
    its own, so they place the parts it holds."""
    if "dtype" not in inspect.signature(impl.Transformer).parameters:
        pytest.skip("implementation lacks device=/dtype= constructor keywords")
    for kw in ({"device": "meta"}, {"dtype": torch.float64}, {"device": "meta", "dtype": torch.float16}):
        parts = impl.build_transformer(5, 6, 4, 4, 8, 1, 2, 0.0, 16)
        model = impl.Transformer(parts.encoder, parts.decoder, parts.src_embed, parts.tgt_embed, parts.src_pos,
                                 parts.tgt_pos, parts.projection_layer, **kw)
        tensors = dict(model.named_parameters()) | dict(model.named_buffers())
        want_device, want_dtype = torch.device(kw.get("device", "cpu")), kw.get("dtype", torch.float32)
        wrong = {k: (t.device, t.dtype) for k, t in tensors.items()
                 if t.device != want_device or (t.is_floating_point() and t.dtype != want_dtype)}
        assert not wrong, f"Transformer(parts..., **{kw}): tensors elsewhere: {wrong}"


@pytest.mark.clause("extra.mask-helpers")
def test_causal_mask_device_keyword_places_the_mask(impl) -> None:
    if not hasattr(impl, "causal_mask") or "device" not in inspect.signature(impl.causal_mask).parameters:
        pytest.skip("implementation lacks causal_mask(size, device=)")
    assert impl.causal_mask(3, device="meta").device.type == "meta"


@pytest.mark.clause("api.attributes")
@pytest.mark.parametrize("name", [n for n, info in COMPONENTS.items() if info.parameters])
def test_every_component_holds_the_contract_parameters(impl, name: str) -> None:
    """Each leaf component holds the parameters of the contract table under their names and shapes
    (``nn.Linear``'s ``weight`` [out, in] and ``bias`` [out]; the feed-forward's ``linear_1.bias``/``linear_2.bias``
    are the paper's b1, b2). Extra parameters are allowed; the optional ones (projection biases) may be absent."""
    cfg = ModelConfig(src_vocab_size=7, tgt_vocab_size=9, src_seq_len=5, tgt_seq_len=6, d_model=8, N=1, h=2,
                      dropout=0.0, d_ff=12)
    module = components.build(impl, name, cfg, dtype=torch.float64)
    own = dict(module.named_parameters())
    missing = sorted(set(COMPONENTS[name].parameters) - set(own))
    assert not missing, f"{COMPONENTS[name].contract} lacks the contract parameter(s) {missing} (has {sorted(own)})"
    shapes = {"linear_1.weight": (cfg.d_ff, cfg.d_model), "linear_1.bias": (cfg.d_ff,),
              "linear_2.weight": (cfg.d_model, cfg.d_ff), "linear_2.bias": (cfg.d_model,)}
    wrong = {p: tuple(own[p].shape) for p in shapes if p in own and name == "feed_forward"
             and tuple(own[p].shape) != shapes[p]}
    assert not wrong, f"{COMPONENTS[name].contract} parameter shapes {wrong}, the contract's {shapes}"
