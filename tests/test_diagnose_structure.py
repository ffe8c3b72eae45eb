"""Issue 33, item 1: the API diagnosis proposes the structural forms of ``--impl-map`` when it sees them
(``/work/notes/structural-map-spec.md``; docs/guide.md, the map): the Annotated Transformer's ``linears``, a fused
``qkv``/``kv`` projection, a module-level ``attention`` function, ``nn.Sequential(Embeddings, PositionalEncoding)``
embeddings and a ``generator``, ``Encoder(layer, N)``, a builder without sequence lengths, and masks without the head
dimension. Each is a finding with its clause and the form in the proposed map; what the probe cannot tell is said.

The models are small learner-style files written to a temporary directory: ``ANNOTATED`` (the Annotated
Transformer's shape) and variants of its attention block.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
from torch import nn

from reference.kit.adapter import ImplMap
from reference.kit.diagnose import _structural_signatures, diagnose
from reference.kit.findings import Diagnosis, Finding

pytestmark = pytest.mark.clause("kit")

#: The Annotated Transformer (harvardnlp, 2022 edition), as a learner copies it: Encoder(layer, N), MultiHeaded-
#: Attention with ``linears`` and ``mask.unsqueeze(1)``, a module-level ``attention``, ``nn.Sequential(Embeddings,
#: PositionalEncoding)`` embeddings, a ``Generator`` (log-softmax), ``make_model`` without sequence lengths.
ANNOTATED = '''
import copy, math
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.functional import log_softmax


class EncoderDecoder(nn.Module):
    def __init__(self, encoder, decoder, src_embed, tgt_embed, generator):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.src_embed, self.tgt_embed, self.generator = src_embed, tgt_embed, generator

    def forward(self, src, tgt, src_mask, tgt_mask):
        return self.decode(self.encode(src, src_mask), src_mask, tgt, tgt_mask)

    def encode(self, src, src_mask):
        return self.encoder(self.src_embed(src), src_mask)

    def decode(self, memory, src_mask, tgt, tgt_mask):
        return self.decoder(self.tgt_embed(tgt), memory, src_mask, tgt_mask)


class Generator(nn.Module):
    def __init__(self, d_model, vocab):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab)

    def forward(self, x):
        return log_softmax(self.proj(x), dim=-1)


def clones(module, N):
    return nn.ModuleList([copy.deepcopy(module) for _ in range(N)])


class Encoder(nn.Module):
    def __init__(self, layer, N):
        super().__init__()
        self.layers = clones(layer, N)
        self.norm = LayerNorm(layer.size)

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class LayerNorm(nn.Module):
    def __init__(self, features, eps=1e-6):
        super().__init__()
        self.a_2 = nn.Parameter(torch.ones(features))
        self.b_2 = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


class SublayerConnection(nn.Module):
    def __init__(self, size, dropout):
        super().__init__()
        self.norm = LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, sublayer):
        return x + self.dropout(sublayer(self.norm(x)))


class EncoderLayer(nn.Module):
    def __init__(self, size, self_attn, feed_forward, dropout):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout), 2)
        self.size = size

    def forward(self, x, mask):
        x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, mask))
        return self.sublayer[1](x, self.feed_forward)


class Decoder(nn.Module):
    def __init__(self, layer, N):
        super().__init__()
        self.layers = clones(layer, N)
        self.norm = LayerNorm(layer.size)

    def forward(self, x, memory, src_mask, tgt_mask):
        for layer in self.layers:
            x = layer(x, memory, src_mask, tgt_mask)
        return self.norm(x)


class DecoderLayer(nn.Module):
    def __init__(self, size, self_attn, src_attn, feed_forward, dropout):
        super().__init__()
        self.size = size
        self.self_attn = self_attn
        self.src_attn = src_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout), 3)

    def forward(self, x, memory, src_mask, tgt_mask):
        m = memory
        x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, tgt_mask))
        x = self.sublayer[1](x, lambda x: self.src_attn(x, m, m, src_mask))
        return self.sublayer[2](x, self.feed_forward)


def subsequent_mask(size):
    attn_shape = (1, size, size)
    return torch.triu(torch.ones(attn_shape), diagonal=1).type(torch.uint8) == 0


def attention(query, key, value, mask=None, dropout=None):
    d_k = query.size(-1)
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e9)
    p_attn = scores.softmax(dim=-1)
    if dropout is not None:
        p_attn = dropout(p_attn)
    return torch.matmul(p_attn, value), p_attn


class MultiHeadedAttention(nn.Module):
    def __init__(self, h, d_model, dropout=0.1):
        super().__init__()
        assert d_model % h == 0
        self.d_k = d_model // h
        self.h = h
        self.linears = clones(nn.Linear(d_model, d_model), 4)
        self.attn = None
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, query, key, value, mask=None):
        if mask is not None:
            mask = mask.unsqueeze(1)
        nbatches = query.size(0)
        query, key, value = [
            lin(x).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)
            for lin, x in zip(self.linears, (query, key, value))
        ]
        x, self.attn = attention(query, key, value, mask=mask, dropout=self.dropout)
        x = x.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k)
        del query
        del key
        del value
        return self.linears[-1](x)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.1):
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.w_2(self.dropout(self.w_1(x).relu()))


class Embeddings(nn.Module):
    def __init__(self, d_model, vocab):
        super().__init__()
        self.lut = nn.Embedding(vocab, d_model)
        self.d_model = d_model

    def forward(self, x):
        return self.lut(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, dropout, max_len=5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * -(math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        pe = pe.unsqueeze(0)
        self.register_buffer("pe", pe)

    def forward(self, x):
        x = x + self.pe[:, : x.size(1)].requires_grad_(False)
        return self.dropout(x)


def make_model(src_vocab, tgt_vocab, N=6, d_model=512, d_ff=2048, h=8, dropout=0.1):
    c = copy.deepcopy
    attn = MultiHeadedAttention(h, d_model)
    ff = PositionwiseFeedForward(d_model, d_ff, dropout)
    position = PositionalEncoding(d_model, dropout)
    model = EncoderDecoder(
        Encoder(EncoderLayer(d_model, c(attn), c(ff), dropout), N),
        Decoder(DecoderLayer(d_model, c(attn), c(attn), c(ff), dropout), N),
        nn.Sequential(Embeddings(d_model, src_vocab), c(position)),
        nn.Sequential(Embeddings(d_model, tgt_vocab), c(position)),
        Generator(d_model, tgt_vocab),
    )
    for p in model.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return model
'''

#: Attention blocks in place of ``ANNOTATED``'s (each keeps its ``mask.unsqueeze(1)``).
HEAD = """class MultiHeadedAttention(nn.Module):
    def __init__(self, h, d_model, dropout=0.1):
        super().__init__()
        self.d_k, self.h = d_model // h, h
        self.attn = None
        self.dropout = nn.Dropout(p=dropout)
"""
SPLIT = """
    def split(self, x):
        return x.view(x.size(0), -1, self.h, self.d_k).transpose(1, 2)

    def merge(self, query, key, value, mask):
        if mask is not None:
            mask = mask.unsqueeze(1)
        x, self.attn = attention(self.split(query), self.split(key), self.split(value), mask=mask,
                                 dropout=self.dropout)
        return x.transpose(1, 2).contiguous().view(x.size(0), -1, self.h * self.d_k)
"""
THREE_AND_OUT = HEAD + """        self.linears = clones(nn.Linear(d_model, d_model), 3)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask=None):
        query, key, value = [lin(x) for lin, x in zip(self.linears, (query, key, value))]
        return self.out(self.merge(query, key, value, mask))
""" + SPLIT
FUSED_QKV = HEAD + """        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask=None):
        wq, wk, wv = self.qkv.weight.chunk(3)
        bq, bk, bv = self.qkv.bias.chunk(3)
        query, key, value = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
        return self.out_proj(self.merge(query, key, value, mask))
""" + SPLIT
FUSED_KV = HEAD + """        self.q_proj = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask=None):
        wk, wv = self.kv.weight.chunk(2)
        bk, bv = self.kv.bias.chunk(2)
        query, key, value = self.q_proj(query), F.linear(key, wk, bk), F.linear(value, wv, bv)
        return self.out_proj(self.merge(query, key, value, mask))
""" + SPLIT


def _load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> types.ModuleType:
    """``source`` as the module ``name`` (a file in ``tmp_path``, in ``sys.modules`` for this test only)."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def _annotated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "annotated", attention: str | None = None,
               replace: tuple[tuple[str, str], ...] = ()) -> types.ModuleType:
    """``ANNOTATED``, its attention block replaced by ``attention``, then each (old, new) of ``replace``."""
    source = ANNOTATED
    if attention is not None:
        start, end = source.index("class MultiHeadedAttention"), source.index("class PositionwiseFeedForward")
        source = source[:start] + attention + "\n\n" + source[end:]
    for old, new in replace:
        assert old in source, old
        source = source.replace(old, new)
    return _load(tmp_path, monkeypatch, name, source)


def _finding(diag: Diagnosis, where: str, contract: str, clause: str | None = None) -> Finding:
    [found] = [f for f in diag.findings if f.where == where and f.contract == contract
               and (clause is None or f.clause == clause)]
    return found


def _applied(diag: Diagnosis, section: str, where: str, contract: str) -> bool:
    """Whether the map in effect holds the proposed entry: always once the adapter applies the structural forms."""
    held = getattr(diag.effective, section).get(where, {}).get(contract)
    return held == getattr(diag.proposed, section)[where][contract]


# ------------------------------------------------------------------------------------------------ the whole shape
def test_annotated_transformer_gets_the_structural_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Annotated Transformer's shape: every structural form proposed, nothing left unresolved, the proposal
    that of the spec's example (``structural-map-spec.md``)."""
    diag = diagnose(_annotated(tmp_path, monkeypatch))
    proposed = diag.proposed
    assert proposed.masks == "no-head-dim"
    assert proposed.classes["Transformer"] == "EncoderDecoder" and proposed.classes["build_transformer"] == "make_model"
    for stack in ("Encoder", "Decoder"):
        assert proposed.arguments[stack] == {"layers": {"clone": "layer", "count": "N"}, "features": False}
    assert proposed.arguments["Transformer"] == {"src_embed": "src_embed.0", "src_pos": "src_embed.1",
                                                 "tgt_embed": "tgt_embed.0", "tgt_pos": "tgt_embed.1",
                                                 "projection_layer": "generator"}
    assert {k: proposed.arguments["build_transformer"][k] for k in ("src_seq_len", "tgt_seq_len")} == {
        "src_seq_len": False, "tgt_seq_len": False}
    mha = proposed.attributes["MultiHeadAttentionBlock"]
    assert {k: mha[k] for k in ("w_q", "w_k", "w_v", "w_o", "attention", "attention_scores")} == {
        "w_q": "linears.0", "w_k": "linears.1", "w_v": "linears.2", "w_o": "linears.3", "attention": "attention",
        "attention_scores": "attn"}
    assert proposed.attributes["Transformer"] == {"src_embed": "src_embed.0", "src_pos": "src_embed.1",
                                                  "tgt_embed": "tgt_embed.0", "tgt_pos": "tgt_embed.1",
                                                  "projection_layer": "generator", "project": "generator"}
    assert proposed.attributes["InputEmbeddings"]["embedding"] == "lut"  # reached through `src_embed.0`
    assert not diag.unresolved(), [f.line() for f in diag.unresolved()]
    printed = "\n".join(diag.lines())
    assert printed.index('masks = "no-head-dim"') < printed.index("[classes]")
    assert 'layers = {clone = "layer", count = "N"}' in printed


# ------------------------------------------------------------------------------------------------ projections
def test_four_linears_in_a_module_list_are_q_k_v_o(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    diag = diagnose(_annotated(tmp_path, monkeypatch))
    for i, w in enumerate(("w_q", "w_k", "w_v", "w_o")):
        f = _finding(diag, "MultiHeadAttentionBlock", w)
        assert f.clause == "api.attributes" and f.found == f"linears.{i}" and f.blocking
        assert f.message.startswith(f"`MultiHeadedAttention` has no `{w}`; its `linears` is a ModuleList of 4 "
                                    "nn.Linear(8, 8) (the Annotated Transformer's `linears`), in the order q, k, v, o")
        assert f.message.endswith("(checked: the probe's forward equals the contract's formula with these weights)")
        assert _applied(diag, "attributes", "MultiHeadAttentionBlock", w)


def test_three_linears_in_a_list_and_an_output_linear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    diag = diagnose(_annotated(tmp_path, monkeypatch, "three_and_out", THREE_AND_OUT))
    mha = diag.proposed.attributes["MultiHeadAttentionBlock"]
    assert {w: mha[w] for w in ("w_q", "w_k", "w_v", "w_o")} == {
        "w_q": "linears.0", "w_k": "linears.1", "w_v": "linears.2", "w_o": "out"}
    out = _finding(diag, "MultiHeadAttentionBlock", "w_o")
    assert out.message == ("`MultiHeadedAttention` has no `w_o`; beside its ModuleList `linears` of 3 nn.Linear(8, "
                           "8), its nn.Linear(8, 8) `out` is the output projection (checked: the probe's forward "
                           "equals the contract's formula with these weights)")


def test_a_fused_qkv_linear_is_proposed_as_row_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    diag = diagnose(_annotated(tmp_path, monkeypatch, "fused_qkv", FUSED_QKV))
    mha = diag.proposed.attributes["MultiHeadAttentionBlock"]
    assert {w: mha[w] for w in ("w_q", "w_k", "w_v", "w_o")} == {
        "w_q": "qkv[0:d]", "w_k": "qkv[d:2d]", "w_v": "qkv[2d:3d]", "w_o": "out_proj"}
    f = _finding(diag, "MultiHeadAttentionBlock", "w_k")
    assert f.message == ("`MultiHeadedAttention` has no `w_k`; its `qkv` is one nn.Linear(8, 24), a fused q/k/v "
                         "projection (d = its in_features), its rows in the order q, k, v: `qkv[d:2d]` is its key "
                         "projection (checked: the probe's forward equals the contract's formula with these weights)")


def test_fused_rows_in_another_order_are_told_by_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows k, q, v (not q, k, v): the only order under which the block's forward is the contract's formula."""
    module = _annotated(tmp_path, monkeypatch, "fused_kqv", FUSED_QKV,
                        (("wq, wk, wv = self", "wk, wq, wv = self"), ("bq, bk, bv = self", "bk, bq, bv = self")))
    diag = diagnose(module)
    mha = diag.proposed.attributes["MultiHeadAttentionBlock"]
    assert {w: mha[w] for w in ("w_q", "w_k", "w_v")} == {"w_q": "qkv[d:2d]", "w_k": "qkv[0:d]", "w_v": "qkv[2d:3d]"}
    assert _finding(diag, "MultiHeadAttentionBlock", "w_q").message.endswith(
        "(checked: the probe's forward equals the contract's formula with its parts in the order k, q, v, not the "
        "usual one)")


def test_a_fused_kv_linear_beside_its_own_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    diag = diagnose(_annotated(tmp_path, monkeypatch, "fused_kv", FUSED_KV))
    mha = diag.proposed.attributes["MultiHeadAttentionBlock"]
    assert {w: mha[w] for w in ("w_q", "w_k", "w_v", "w_o")} == {
        "w_q": "q_proj", "w_k": "kv[0:d]", "w_v": "kv[d:2d]", "w_o": "out_proj"}
    assert "a fused k/v projection" in _finding(diag, "MultiHeadAttentionBlock", "w_v").message


def test_rows_no_order_explains_are_not_confirmed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block whose forward is no order of its rows (a scaled query: a bug): proposed q, k, v, and said so."""
    module = _annotated(tmp_path, monkeypatch, "fused_scaled", FUSED_QKV,
                        (("F.linear(query, wq, bq)", "2 * F.linear(query, wq, bq)"),))
    f = _finding(diagnose(module), "MultiHeadAttentionBlock", "w_q")
    assert f.found == "qkv[0:d]"
    assert "(not confirmed: with these weights the probe's forward differs from the contract's formula by" in f.message
    assert f.message.endswith("and no other order of them matches (another layout, or a bug the tests name))")


# ------------------------------------------------------------------------------------------------ attention
def test_a_module_level_attention_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _finding(diagnose(_annotated(tmp_path, monkeypatch)), "MultiHeadAttentionBlock", "attention")
    assert (f.clause, f.found) == ("api.attributes", "attention")
    assert f.message == ("`MultiHeadedAttention` has no static `attention`; your module's function `attention(query, "
                         "key, value, mask=None, dropout=None)` takes the contract's call (query, key, value, mask, "
                         "dropout) and returns (output, attention weights) of the contract's shapes on the probe "
                         "([3, 2, 5, 4], [3, 2, 5, 6])")


def test_a_scaled_dot_product_attention_function_is_found_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    module = _annotated(tmp_path, monkeypatch, "sdpa_name", replace=(
        ("def attention(", "def scaled_dot_product_attention("),
        ("x, self.attn = attention(", "x, self.attn = scaled_dot_product_attention(")))
    attributes = diagnose(module).proposed.attributes["MultiHeadAttentionBlock"]
    assert attributes["attention"] == "scaled_dot_product_attention"


def test_an_attention_function_without_weights_is_not_mapped_and_said(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    module = _annotated(tmp_path, monkeypatch, "no_weights", replace=(
        ("    return torch.matmul(p_attn, value), p_attn", "    return torch.matmul(p_attn, value)"),
        ("x, self.attn = attention(", "x = attention(")))
    diag = diagnose(module)
    f = _finding(diag, "MultiHeadAttentionBlock", "attention")
    assert f.found is None and "attention" not in diag.proposed.attributes["MultiHeadAttentionBlock"]
    assert f.message.endswith(
        "; your module's function `attention`(query, key, value, mask=None, dropout=None) returns one tensor, not "
        "(output, attention weights) when called as the contract's attention(query, key, value, mask=None, "
        "dropout=None) on [3, 2, 5, 4], [3, 2, 6, 4], [3, 2, 6, 4]: not mapped")


# ------------------------------------------------------------------------------------------------ the model
def test_sequential_embeddings_and_a_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    diag = diagnose(_annotated(tmp_path, monkeypatch))
    embed = _finding(diag, "Transformer", "src_embed", "api.attributes")
    assert embed.message == ("`EncoderDecoder.src_embed` is nn.Sequential(Embeddings, PositionalEncoding): the "
                             "contract's `src_embed` is element 0, the embedding of the source vocabulary: "
                             "`src_embed.0`")
    pos = _finding(diag, "Transformer", "tgt_pos", "api.attributes")
    assert pos.message == ("`EncoderDecoder` has no `tgt_pos`; its `tgt_embed` is nn.Sequential(Embeddings, "
                           "PositionalEncoding), whose element 1, the target positional encoding: `tgt_embed.1`")
    argument = _finding(diag, "Transformer", "src_pos", "api.signatures")
    assert argument.found == "src_embed.1" and "your `src_embed` takes an nn.Sequential" in argument.message
    project = _finding(diag, "Transformer", "project")
    assert (project.found, project.message) == ("generator", (
        "`EncoderDecoder` has no method `project`; its submodule `generator` (the contract's `projection_layer`) is "
        "called in its place, with the same arguments"))
    generator = _finding(diag, "Transformer", "projection_layer", "api.signatures")
    assert generator.found == "generator" and generator.message.endswith(
        "the contract's argument `projection_layer` is not taken; the probe model holds it as your `generator`, "
        "which your constructor takes")


def test_source_and_target_told_apart_by_vocabulary_not_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """Attributes named ``a``/``b``: the source's is the Sequential whose table has the source vocabulary."""
    module = _annotated(tmp_path, monkeypatch, "ab_names", replace=(
        ("self.src_embed, self.tgt_embed, self.generator = src_embed, tgt_embed, generator",
         "self.b, self.a, self.generator = src_embed, tgt_embed, generator"),
        ("self.src_embed(src)", "self.b(src)"), ("self.tgt_embed(tgt)", "self.a(tgt)")))
    attributes = diagnose(module).proposed.attributes["Transformer"]
    assert {k: attributes[k] for k in ("src_embed", "src_pos", "tgt_embed", "tgt_pos")} == {
        "src_embed": "b.0", "src_pos": "b.1", "tgt_embed": "a.0", "tgt_pos": "a.1"}


# ------------------------------------------------------------------------------------------------ constructors
def _classes(**classes: type) -> types.ModuleType:
    module = types.ModuleType("ctor_forms")
    for name, cls in classes.items():
        setattr(module, name, cls)
    return module


@pytest.mark.parametrize("layer, count", [("layer", "N"), ("block", "num_layers"), ("encoder_layer", "n_layers")])
def test_one_layer_and_a_count_is_a_clone_entry(layer: str, count: str) -> None:
    exec_ns: dict = {"nn": nn}
    exec(f"class Encoder(nn.Module):\n    def __init__(self, {layer}, {count}):\n        super().__init__()\n",
         exec_ns)
    findings, proposed = _structural_signatures(_classes(Encoder=exec_ns["Encoder"]), ImplMap())
    assert proposed == {"Encoder": {"layers": {"clone": layer, "count": count}, "features": False}}
    layers, features = findings
    assert (layers.clause, layers.where, layers.contract) == ("api.signatures", "Encoder", "layers")
    assert layers.message == (
        f"`Encoder('{layer}', '{count}')` takes one layer and a count for the contract's `layers` (a ModuleList): "
        f"`layers = {{clone = \"{layer}\", count = \"{count}\"}}` (the kit passes `{layer}` = layers[0] and `{count}` "
        "= len(layers), then loads each layer's weights into your copy of it)")
    assert features.message == (f"`Encoder('{layer}', '{count}')` takes no width for the contract's `features` (your "
                                f"norm takes its width from `{layer}`): the kit leaves it out")


def test_a_clone_constructor_with_a_width_maps_features_to_it() -> None:
    class Decoder(nn.Module):
        def __init__(self, layer, N, d_model):
            super().__init__()

    findings, proposed = _structural_signatures(_classes(Decoder=Decoder), ImplMap())
    assert proposed == {"Decoder": {"layers": {"clone": "layer", "count": "N"}, "features": "d_model"}}


def test_a_list_of_layers_is_not_a_clone_entry() -> None:
    class Encoder(nn.Module):
        def __init__(self, layers, size):
            super().__init__()

    assert _structural_signatures(_classes(Encoder=Encoder), ImplMap()) == ([], {})


def test_a_builder_without_sequence_lengths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also when it takes an extra argument (which the general matching would have left the lengths to)."""
    def make_model(src_vocab, tgt_vocab, N=6, d_model=512, d_ff=2048, h=8, dropout=0.1, tie_weights=False):
        pass

    findings, proposed = _structural_signatures(_classes(make_model=make_model),
                                                ImplMap(classes={"build_transformer": "make_model"}))
    assert proposed == {"build_transformer": {"src_seq_len": False, "tgt_seq_len": False}}
    assert findings[0].message == (
        "`make_model('src_vocab', 'tgt_vocab', 'N', 'd_model', 'd_ff', 'h', 'dropout', 'tie_weights')` takes no "
        "sequence length (none of its parameters is one): the kit leaves `src_seq_len` out, and your positional "
        "tables keep their own length")

    def with_lengths(src_vocab, tgt_vocab, max_len, N=6):
        pass

    assert _structural_signatures(_classes(build_transformer=with_lengths), ImplMap()) == ([], {})


# ------------------------------------------------------------------------------------------------ masks
def test_masks_without_the_head_dimension_by_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    diag = diagnose(_annotated(tmp_path, monkeypatch))
    f = _finding(diag, "MultiHeadAttentionBlock", "(masks)")
    assert (f.clause, f.found, f.blocking) == ("api.signatures", "no-head-dim", True)
    assert f.message == (
        "`MultiHeadedAttention` takes masks without the head dimension (`masks = \"no-head-dim\"`): with the "
        "contract's key-padding mask [3, 1, 1, 6] (hiding the last 2 keys) its forward returns shape (3, 15, 8), not "
        "(3, 5, 8); with the same mask as [3, 1, 6] its output equals its output without those keys (it unsqueezes "
        "the head dimension itself; its source has `mask.unsqueeze(1)`)")
    assert diag.effective.masks == "no-head-dim"
    assert f in diag.unaccepted()  # the user's map does not say it
    user = ImplMap.from_dict({"masks": "no-head-dim"})
    assert user.masks == "no-head-dim"
    again = diagnose(sys.modules["annotated"], user)
    assert not [g for g in again.findings if g.contract == "(masks)"] and again.effective.masks == "no-head-dim"


def test_the_contracts_mask_layout_says_nothing() -> None:
    import scratch_transformer

    diag = diagnose(scratch_transformer)
    assert diag.proposed.masks == "head-dim" and not diag.findings


def test_a_mask_layout_neither_way_is_left_to_the_mask_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """A block that wants [B, Lk] masks: neither the contract's layout nor the one without the head dimension
    works. No map form fixes it, so it is no API finding (an unaccepted one would FAIL api.signatures for what is a
    masking failure): nothing is said or proposed, and the mask tests fail under their own clauses."""
    module = _annotated(tmp_path, monkeypatch, "two_d_mask", replace=(
        ("            mask = mask.unsqueeze(1)", "            mask = mask[:, None, None, :]"),))
    diag = diagnose(module)
    assert not [f for f in diag.findings if f.contract == "(masks)"] and diag.proposed.masks == "head-dim"


# ------------------------------------------------------------------------------------------------ the map in effect
def test_the_map_in_effect_holds_every_proposed_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The proposed structural forms are in the map the run uses (the adapter applies them), plain entries too;
    nothing is left unresolved."""
    diag = diagnose(_annotated(tmp_path, monkeypatch))
    used = [("attributes", "MultiHeadAttentionBlock", "w_q"), ("attributes", "MultiHeadAttentionBlock", "attention"),
            ("attributes", "Transformer", "src_embed"), ("attributes", "Transformer", "project"),
            ("arguments", "Encoder", "layers"), ("arguments", "Transformer", "src_pos"),
            ("attributes", "MultiHeadAttentionBlock", "attention_scores"),
            ("attributes", "Transformer", "projection_layer"), ("arguments", "Transformer", "projection_layer"),
            ("arguments", "build_transformer", "src_seq_len")]
    assert all(_applied(diag, *e) for e in used), [e for e in used if not _applied(diag, *e)]
    assert not diag.unresolved(), [f.line() for f in diag.unresolved()]


# ------------------------------------------------------------------------------------------------ other walkthroughs
#: Found by type, shape and the probe's calls, not by a name (field files of these styles: tests/field/
#: fused_qkv_gpt.py, gordic_style.py, paper_postnorm.py).
def test_a_feed_forward_in_a_sequential_is_mapped_by_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _annotated(tmp_path, monkeypatch, "sequential_ffn", replace=((
        "        self.w_1 = nn.Linear(d_model, d_ff)\n        self.w_2 = nn.Linear(d_ff, d_model)\n"
        "        self.dropout = nn.Dropout(dropout)\n\n    def forward(self, x):\n"
        "        return self.w_2(self.dropout(self.w_1(x).relu()))",
        "        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), "
        "nn.Linear(d_ff, d_model))\n\n    def forward(self, x):\n        return self.net(x)"),))
    diag = diagnose(module)
    assert diag.proposed.attributes["FeedForwardBlock"] == {"linear_1": "net.0", "dropout": "net.2",
                                                            "linear_2": "net.3"}
    assert not diag.unresolved(), [f.line() for f in diag.unresolved()]


def test_a_feed_forward_wider_than_d_ff_by_which_linear_reads_d_model(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``width_mult * d_model`` wide (not the probe's d_ff), named ``b`` then ``a``: the one reading d_model is
    ``linear_1``."""
    module = _annotated(tmp_path, monkeypatch, "wide_ffn", replace=(
        ("        self.w_1 = nn.Linear(d_model, d_ff)\n        self.w_2 = nn.Linear(d_ff, d_model)\n",
         "        self.b = nn.Linear(d_model, 4 * d_model)\n        self.a = nn.Linear(4 * d_model, d_model)\n"),
        ("self.w_2(self.dropout(self.w_1(x).relu()))", "self.a(self.dropout(self.b(x).relu()))")))
    diag = diagnose(module)
    assert {k: diag.proposed.attributes["FeedForwardBlock"][k] for k in ("linear_1", "linear_2")} == {
        "linear_1": "b", "linear_2": "a"}
    assert _finding(diag, "FeedForwardBlock", "linear_1", "api.attributes").message.endswith(
        "its weight [32, 8] is the one that reads d_model (8)")


def test_self_and_cross_attention_told_apart_by_the_probes_calls(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Attributes ``a`` (the self-attention) and ``b`` (the cross-attention), declared in the other order: the probe's
    decode calls ``b`` with keys of the source's length."""
    module = _annotated(tmp_path, monkeypatch, "ab_attention", replace=(
        ("        self.self_attn = self_attn\n        self.src_attn = src_attn\n",
         "        self.b = src_attn\n        self.a = self_attn\n"),
        ("self.self_attn(x, x, x, tgt_mask)", "self.a(x, x, x, tgt_mask)"),
        ("self.src_attn(x, m, m, src_mask)", "self.b(x, m, m, src_mask)")))
    diag = diagnose(module)
    block = diag.proposed.attributes["DecoderBlock"]
    assert (block["self_attention_block"], block["cross_attention_block"]) == ("a", "b")
    assert _finding(diag, "DecoderBlock", "cross_attention_block", "api.attributes").message.endswith(
        "the probe's decode called it with keys of the source's length and queries of the target's")


def test_parts_in_a_module_dict_and_a_method_that_is_not_project(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """nanoGPT's ``self.transformer = nn.ModuleDict(...)``: ``encoder = "parts.enc"``; an ``init_params`` method does
    not answer the contract's ``project`` call, the generator does."""
    module = _annotated(tmp_path, monkeypatch, "module_dict", replace=(
        ("        self.encoder, self.decoder = encoder, decoder\n",
         "        self.parts = nn.ModuleDict(dict(enc=encoder, dec=decoder))\n"),
        ("return self.encoder(self.src_embed(src), src_mask)", "return self.parts.enc(self.src_embed(src), src_mask)"),
        ("return self.decoder(self.tgt_embed(tgt), memory, src_mask, tgt_mask)",
         "return self.parts.dec(self.tgt_embed(tgt), memory, src_mask, tgt_mask)\n\n"
         "    def init_params(self, default_initialization=False):\n"
         "        if not default_initialization:\n"
         "            for p in self.parameters():\n"
         "                if p.dim() > 1:\n"
         "                    nn.init.xavier_uniform_(p)")))
    diag = diagnose(module)
    transformer = diag.proposed.attributes["Transformer"]
    assert (transformer["encoder"], transformer["decoder"], transformer["project"]) == (
        "parts.enc", "parts.dec", "generator")
    assert not diag.unresolved(), [f.line() for f in diag.unresolved()]


def test_weights_a_forward_leaves_none_and_no_size_taken_for_another(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A block that never keeps its weights in its ``attn`` (left None): proposed, the finding says the forward did
    not set it. ``Embeddings`` holds only ``d_model`` (8): it is not proposed as ``vocab_size`` (11)."""
    module = _annotated(tmp_path, monkeypatch, "unset_weights", replace=(
        ("x, self.attn = attention(query, key, value, mask=mask, dropout=self.dropout)",
         "x, _ = attention(query, key, value, mask=mask, dropout=self.dropout)"),))
    diag = diagnose(module)
    scores = _finding(diag, "MultiHeadAttentionBlock", "attention_scores")
    assert (scores.clause, scores.found, scores.blocking) == ("mha.static-attention", "attn", False)
    assert scores.message == ("`MultiHeadedAttention` has no `attention_scores`; its `attn` is named for the attention "
                              "weights but is None after the probe's forward (the forward did not keep them there)")
    assert "vocab_size" not in diag.proposed.attributes.get("InputEmbeddings", {})
