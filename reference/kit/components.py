"""The component registry: one record per contract component, which tests, the report, the localiser and the API
diagnosis all read (after PyTorch's OpInfo, ``torch/testing/_internal/opinfo/core.py``).

A :class:`ComponentInfo` holds a component's one snake_case ``name`` (its oracle ``numpy_ref.<name>``, its torch
reference ``torch_ref.<name>``, its report rows, the ``pytest -k <name>`` keyword of its tests), the contract's class
or function (``contract``) with its constructor ``signature``, the attributes and parameters an instance holds, how
to ``build`` one from sizes, the tolerance ``rule`` its values are judged by, the contract clauses it is judged
under and the clauses of each report row.
``SIGNATURES``/``ATTRIBUTES``/``REQUIRED_NAMES`` (below), ``diagnose.PATHS``/``SYNONYMS``,
``hooks.CONTRACT_CLASSES``, ``weights.CONTRACT_PARAMETERS`` and the report's clauses are views of this table.
docs/architecture.md says how to add a component.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import nn

from reference.oracles import numpy_ref, torch_ref
from reference.spec import variants
from reference.spec.contract import construct

if TYPE_CHECKING:
    from reference.spec.contract import ModelConfig

Build = Callable[..., nn.Module]  # (impl, cfg: ModelConfig, *, device, dtype) -> the component, default initialised
#: (reference namespace ``numpy_ref`` or ``torch_ref``, the forward's inputs, weights keyed like the component's
#: ``named_parameters()``, h, eps) -> the reference's output: the component's oracle and torch reference applied to
#: whatever a forward call received (the localiser's local check re-runs both on the implementation's own inputs).
Apply = Callable[[ModuleType, tuple, Mapping[str, Any], int, float], Any]


@dataclass(frozen=True)
class ComponentInfo:
    """Everything the kit knows about one contract component."""

    name: str  # snake_case, one per component: oracle, torch reference, report key, test keyword
    contract: str  # the contract's class or function name
    signature: tuple[str, ...]  # constructor parameters, in the blog's order
    attributes: Mapping[str, str] = field(default_factory=dict)  # name -> kind (see ``ATTRIBUTES``)
    parameters: tuple[str, ...] = ()  # leaf components: ``named_parameters()`` the oracle needs
    optional_parameters: tuple[str, ...] = ()  # may be absent (absent = zero)
    probe_path: str | None = None  # where the API diagnosis finds one in a built model ("" = the model)
    #: other walkthroughs' names, lower case without underscores: the Annotated Transformer's (SublayerConnection,
    #: Generator), nanoGPT's (MLP, LMHead), gordicaleksa's (PositionwiseFeedForwardNet, SublayerLogic,
    #: DecoderGenerator), the paper's "Add & Norm" (AddNorm), Hugging Face's, the acronyms
    synonyms: tuple[str, ...] = ()
    clauses: tuple[str, ...] = ()  # the contract clauses its behaviour is judged under
    report: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # report row -> its clauses
    required: bool = True  # False: an extra beyond the blog's API (tests that need it skip without it)
    #: The tolerance rule its values are judged by (``compare.judge``): "auto" (the error ratio against torch's own
    #: error below float64, docs/tolerances.md) or "direct" (``VALUE_TOL``: exact lookups and tables, no torch error)
    rule: str = "auto"
    build: Build | None = None
    oracle: Callable[..., Any] | None = None  # numpy_ref.<name>
    torch_reference: Callable[..., Any] | None = None  # torch_ref.<name>
    apply: Apply | None = None  # the reference (numpy_ref or torch_ref) on a forward call's inputs

    @property
    def is_class(self) -> bool:
        return self.contract[:1].isupper()


# --------------------------------------------------------------------------------------------------- builders
def _construct(factory: Any, *args: Any, device: Any, dtype: torch.dtype) -> nn.Module:
    return construct(factory, *args, device=device, dtype=dtype)


def build(impl: ModuleType, name: str, cfg: ModelConfig, *, device: Any = "cpu", dtype: torch.dtype = torch.float32
          ) -> nn.Module:
    """Component ``name`` of ``impl`` at ``cfg``'s sizes (``d_model``, ``h``, ``d_ff``, ``dropout``, ``N``; the
    embedding's and positions' source vocabulary and length, the projection's target vocabulary) in ``dtype`` on
    ``device``, with its default parameters."""
    info = COMPONENTS[name]
    if info.build is None:
        raise ValueError(f"{name} is not built from sizes")
    return info.build(impl, cfg, device=device, dtype=dtype)


def _leaf(contract: str, *fields: str) -> Build:
    """A builder that passes ``cfg``'s ``fields`` positionally to ``impl.<contract>``."""
    def make(impl: ModuleType, s: ModelConfig, *, device: Any, dtype: torch.dtype) -> nn.Module:
        return _construct(getattr(impl, contract), *(getattr(s, f) for f in fields), device=device, dtype=dtype)
    return make


def _encoder_block(impl: ModuleType, s: ModelConfig, *, device: Any, dtype: torch.dtype) -> nn.Module:
    kw = {"device": device, "dtype": dtype}
    return _construct(impl.EncoderBlock, s.d_model, build(impl, "multi_head_attention", s, **kw),
                      build(impl, "feed_forward", s, **kw), s.dropout, **kw)


def _decoder_block(impl: ModuleType, s: ModelConfig, *, device: Any, dtype: torch.dtype) -> nn.Module:
    kw = {"device": device, "dtype": dtype}
    return _construct(impl.DecoderBlock, s.d_model, build(impl, "multi_head_attention", s, **kw),
                      build(impl, "multi_head_attention", s, **kw), build(impl, "feed_forward", s, **kw),
                      s.dropout, **kw)


def _stack(contract: str, block: str) -> Build:
    """``impl.<contract>(d_model, ModuleList of N blocks)``."""
    def make(impl: ModuleType, s: ModelConfig, *, device: Any, dtype: torch.dtype) -> nn.Module:
        layers = nn.ModuleList([build(impl, block, s, device=device, dtype=dtype) for _ in range(s.N)])
        return _construct(getattr(impl, contract), s.d_model, layers, device=device, dtype=dtype)
    return make


# --------------------------------------------------------------------------------------------------- records
_MHA_ATTRS = {"d_model": "int", "h": "int", "d_k": "int", "w_q": "Linear", "w_k": "Linear", "w_v": "Linear",
              "w_o": "Linear", "dropout": "Dropout", "attention": "method", "attention_scores": "weights"}
_MASKED = ("mha.formula", "mask.semantics", "mask.zero-weight")
#: The residual's clause of every variant (``reference.spec.variants``): a run counts its own variant's only.
_RESIDUAL = tuple(variants.RESIDUAL_CLAUSES.values())

_RECORDS = (
    ComponentInfo(
        "embedding", "InputEmbeddings", ("d_model", "vocab_size"),
        {"d_model": "int", "vocab_size": "int", "embedding": "Embedding"}, ("embedding.weight",),
        probe_path="src_embed", clauses=("embed.scaled-lookup",), report={"embedding": ("embed.scaled-lookup",)},
        synonyms=("embeddings", "embedding", "tokenembedding", "tokenembeddings", "inputembedding", "embed"),
        build=_leaf("InputEmbeddings", "d_model", "src_vocab_size"), oracle=numpy_ref.embedding, rule="direct",
        torch_reference=torch_ref.embedding, apply=lambda R, xs, w, h, eps: R.embedding(xs[0], w["embedding.weight"])),
    ComponentInfo(
        "positional_encoding", "PositionalEncoding", ("d_model", "seq_len", "dropout"),
        {"d_model": "int", "seq_len": "int", "dropout": "Dropout", "pe": "buffer"}, probe_path="src_pos",
        synonyms=("positionalembedding", "posencoding", "sinusoidalpositionalencoding", "positional"),
        clauses=("pe.formula", "pe.add"), report={"positional_encoding": ("pe.formula", "pe.add")},
        build=_leaf("PositionalEncoding", "d_model", "src_seq_len", "dropout"), rule="direct",
        oracle=numpy_ref.positional_encoding, torch_reference=torch_ref.positional_encoding,
        apply=lambda R, xs, w, h, eps: R.positional_encoding(xs[0])),
    ComponentInfo(
        "layer_norm", "LayerNormalization", ("features", "eps"),
        {"eps": "float", "alpha": "vector", "bias": "vector"}, ("alpha", "bias"), probe_path="encoder.norm",
        synonyms=("layernorm", "norm", "layernormalisation"), clauses=("ln.biased-variance",),
        report={"layer_norm": ("ln.biased-variance",), "layer_norm/offset": ("ln.biased-variance",),
                "grad/layer_norm": ("ln.biased-variance",)},
        build=_leaf("LayerNormalization", "d_model"), oracle=numpy_ref.layer_norm,
        torch_reference=torch_ref.layer_norm,
        apply=lambda R, xs, w, h, eps: R.layer_norm(xs[0], w["alpha"], w["bias"], eps)),
    ComponentInfo(
        "feed_forward", "FeedForwardBlock", ("d_model", "d_ff", "dropout"),
        {"linear_1": "Linear", "dropout": "Dropout", "linear_2": "Linear"},
        ("linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"),
        probe_path="encoder.layers[0].feed_forward_block",
        synonyms=("positionwisefeedforward", "feedforward", "ffn", "mlp", "ff", "feedforwardnetwork",
                  "positionwisefeedforwardnet"),
        clauses=("ffn.formula",), report={"feed_forward": ("ffn.formula",), "grad/feed_forward": ("ffn.formula",)},
        build=_leaf("FeedForwardBlock", "d_model", "d_ff", "dropout"), oracle=numpy_ref.feed_forward,
        torch_reference=torch_ref.feed_forward, apply=lambda R, xs, w, h, eps: R.feed_forward(xs[0], w)),
    ComponentInfo(
        "multi_head_attention", "MultiHeadAttentionBlock", ("d_model", "h", "dropout"), _MHA_ATTRS,
        tuple(f"{p}.weight" for p in numpy_ref.PROJECTIONS), tuple(f"{p}.bias" for p in numpy_ref.PROJECTIONS),
        probe_path="decoder.layers[0].cross_attention_block",
        synonyms=("multiheadedattention", "multiheadattention", "mha", "attention", "selfattention"),
        clauses=("mha.formula", "mha.static-attention", "mask.semantics", "mask.zero-weight"),
        report={"multi_head_attention/none": ("mha.formula", "mha.static-attention"),
                **{f"multi_head_attention/{k}": _MASKED for k in ("causal", "key_padding", "random")},
                "multi_head_attention/cross": ("mha.formula",), "multi_head_attention/large": ("mha.formula",),
                "grad/multi_head_attention": ("mha.formula",)},
        build=_leaf("MultiHeadAttentionBlock", "d_model", "h", "dropout"), oracle=numpy_ref.multi_head_attention,
        torch_reference=torch_ref.multi_head_attention,
        apply=lambda R, xs, w, h, eps: R.multi_head_attention(*(list(xs) + [None] * 4)[:4], w, h)[0]),
    ComponentInfo(
        "residual", "ResidualConnection", ("features", "dropout"),
        {"dropout": "Dropout", "norm": "LayerNormalization"}, probe_path="encoder.layers[0].residual_connections[0]",
        synonyms=("sublayerconnection", "residual", "skipconnection", "residualblock", "addnorm", "addandnorm",
                  "sublayerlogic"),
        clauses=_RESIDUAL, build=_leaf("ResidualConnection", "d_model", "dropout"),
        oracle=numpy_ref.residual),
    ComponentInfo(
        "encoder_block", "EncoderBlock", ("features", "self_attention_block", "feed_forward_block", "dropout"),
        {"self_attention_block": "MultiHeadAttentionBlock", "feed_forward_block": "FeedForwardBlock",
         "residual_connections": "ModuleList"}, probe_path="encoder.layers[0]", synonyms=("encoderlayer",),
        clauses=("encoder.block", *_RESIDUAL), report={"encoder_block": ("encoder.block", *_RESIDUAL)},
        build=_encoder_block, oracle=numpy_ref.encoder_block, torch_reference=torch_ref.encoder_block,
        apply=lambda R, xs, w, h, eps: R.encoder_block(xs[0], xs[1], w, h, eps)),
    ComponentInfo(
        "encoder", "Encoder", ("features", "layers"), {"layers": "ModuleList", "norm": "LayerNormalization"},
        probe_path="encoder", clauses=("encoder.stack",), report={"encoder": ("encoder.stack",)},
        build=_stack("Encoder", "encoder_block"), oracle=numpy_ref.encoder, torch_reference=torch_ref.encoder,
        apply=lambda R, xs, w, h, eps: R.encoder(xs[0], xs[1], w, h, eps)),
    ComponentInfo(
        "decoder_block", "DecoderBlock",
        ("features", "self_attention_block", "cross_attention_block", "feed_forward_block", "dropout"),
        {"self_attention_block": "MultiHeadAttentionBlock", "cross_attention_block": "MultiHeadAttentionBlock",
         "feed_forward_block": "FeedForwardBlock", "residual_connections": "ModuleList"},
        probe_path="decoder.layers[0]", synonyms=("decoderlayer",), clauses=("decoder.block", *_RESIDUAL),
        report={"decoder_block": ("decoder.block", *_RESIDUAL)}, build=_decoder_block,
        oracle=numpy_ref.decoder_block, torch_reference=torch_ref.decoder_block,
        apply=lambda R, xs, w, h, eps: R.decoder_block(*xs[:4], w, h, eps)),
    ComponentInfo(
        "decoder", "Decoder", ("features", "layers"), {"layers": "ModuleList", "norm": "LayerNormalization"},
        probe_path="decoder", clauses=("decoder.stack",), report={"decoder": ("decoder.stack",)},
        build=_stack("Decoder", "decoder_block"), oracle=numpy_ref.decoder, torch_reference=torch_ref.decoder,
        apply=lambda R, xs, w, h, eps: R.decoder(*xs[:4], w, h, eps)),
    ComponentInfo(
        "projection", "ProjectionLayer", ("d_model", "vocab_size"), {"proj": "Linear"}, ("proj.weight", "proj.bias"),
        probe_path="projection_layer",
        synonyms=("generator", "outputhead", "projection", "lmhead", "head", "outputprojection", "decodergenerator"),
        clauses=("projection.logits",), build=_leaf("ProjectionLayer", "d_model", "tgt_vocab_size"),
        oracle=numpy_ref.projection, torch_reference=torch_ref.projection,
        apply=lambda R, xs, w, h, eps: R.projection(xs[0], w)),
    ComponentInfo(
        "transformer", "Transformer",
        ("encoder", "decoder", "src_embed", "tgt_embed", "src_pos", "tgt_pos", "projection_layer"),
        {"encoder": "Encoder", "decoder": "Decoder", "src_embed": "InputEmbeddings", "tgt_embed": "InputEmbeddings",
         "src_pos": "PositionalEncoding", "tgt_pos": "PositionalEncoding", "projection_layer": "ProjectionLayer",
         "encode": "method", "decode": "method", "project": "method"},
        probe_path="", synonyms=("encoderdecoder", "seq2seq", "transformermodel", "model"),
        clauses=("transformer.compose", "projection.logits"),
        report={"transformer": ("transformer.compose", "projection.logits"),
                "grad/transformer": ("transformer.compose",)},
        oracle=numpy_ref.transformer, torch_reference=torch_ref.transformer),
    ComponentInfo(
        "build_transformer", "build_transformer",
        ("src_vocab_size", "tgt_vocab_size", "src_seq_len", "tgt_seq_len", "d_model", "N", "h", "dropout", "d_ff"),
        synonyms=("makemodel", "buildmodel", "createmodel", "maketransformer", "build"), clauses=("build.structure",)),
    ComponentInfo("causal_mask", "causal_mask", ("size",), required=False, clauses=("extra.mask-helpers",),
                  report={"causal_mask": ("extra.mask-helpers",)}, rule="direct"),
    ComponentInfo("padding_mask", "padding_mask", ("tokens", "pad_id"), required=False,
                  clauses=("extra.mask-helpers",), report={"padding_mask": ("extra.mask-helpers",)}, rule="direct"),
)

#: Every component by its snake_case name, in the contract's order.
COMPONENTS: dict[str, ComponentInfo] = {c.name: c for c in _RECORDS}
#: The same records by the contract's class or function name.
BY_CONTRACT: dict[str, ComponentInfo] = {c.contract: c for c in _RECORDS}

#: Names every implementation must export (the blog's API), in the registry's order.
REQUIRED_NAMES = tuple(c.contract for c in COMPONENTS.values() if c.required)
#: Extras beyond the blog's API; tests that need one skip (with this name in the reason) when it is missing.
OPTIONAL_NAMES = tuple(c.contract for c in COMPONENTS.values() if not c.required)
#: Constructor parameters of each contract class (and of ``build_transformer``), in order, as the blog writes them.
SIGNATURES: dict[str, tuple[str, ...]] = {c.contract: c.signature for c in COMPONENTS.values() if c.required}
#: What an instance of each contract class holds, by name: the kind of each attribute ("int", "float", "Linear",
#: "Embedding", "Dropout", "ModuleList", "vector" = a 1-D parameter, "buffer", "method", "weights" = the
#: [B, h, Lq, Lk] tensor a forward leaves, or another contract class's name).
ATTRIBUTES: dict[str, dict[str, str]] = {c.contract: dict(c.attributes) for c in COMPONENTS.values() if c.attributes}
#: Every report row's clauses (the row's dtype adds its ``numerics.*`` clause).
REPORT_CLAUSES: dict[str, tuple[str, ...]] = {row: clauses for c in _RECORDS for row, clauses in c.report.items()}


def contract_class(module: nn.Module) -> str:
    """The contract class name of a module: its class's name, or the contract's for a class seen through an
    ``--impl-map`` (``reference.kit.adapter``)."""
    return getattr(type(module), "_contract_name", type(module).__name__)


def for_clause(clause: str) -> list[str]:
    """Names of the components judged under ``clause`` (``pytest -k <name>`` selects its tests)."""
    return [c.name for c in _RECORDS if clause in c.clauses]
