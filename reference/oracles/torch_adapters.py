"""PyTorch's own modules loaded with a contract implementation's weights, and the mask conversions they need.

Each adapter reads the implementation only by the contract's attribute names (``w_q``, ``linear_1``,
``residual_connections[i].norm.alpha``, ...) and builds the matching ``torch.nn`` module with ``batch_first=True``,
``norm_first=(variant == "pre-norm")``, ReLU, dropout 0, on the same device and in the same dtype. The result computes
the contract's function, so any difference is rounding (or a bug).

Variant (``reference.spec.variants``; ``variant=None``: the run's declared one). ``residual_connections[i].norm``
is ``norm{i+1}`` under both layouts: torch's layers apply ``norm1`` around the first sublayer, ``norm2`` around the
second (``norm3`` the third), before it (``norm_first=True``: ``x + sa(norm1(x))``) or after the sum
(``norm_first=False``: ``norm1(x + sa(x))``), so the same weights serve both. The stacks' final norm
(``Encoder.norm`` -> ``nn.TransformerEncoder.norm``) is there under both, as in ``nn.Transformer``.

Hyper-parameters come from the caller, never from the module under test: ``h`` is what the caller built the
blocks with, ``eps`` (``layer_norm_eps``) defaults to the contract's ``CONTRACT_EPS``. A model whose norms store a
wrong ``eps`` is then compared with torch computing the contract, not with torch repeating the mistake. ``N`` and
``d_ff`` (a whole model's, from its ``ModelConfig``) are checked against the model: ``numpy_ref.StructureMismatch``
(build.structure) when it holds others, never a torch reference adapted to them.

``bias=True`` everywhere. The attention projections' biases are optional in the contract: when a contract
projection has one (``w_q.bias``, ...), it is loaded into its rows of ``in_proj_bias`` (``w_o.bias`` into
``out_proj.bias``) and mapped back to its contract name; when it has none, those entries are zero. Adding 0 is
exact, and ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` take their fused fast paths
(``torch._native_multi_head_attention``, ``torch._transformer_encoder_layer_fwd``, the nested-tensor encoder) only
when ``in_proj_bias is not None``: ``bias=False`` would confine the comparison to torch's slow path. Zero biases of a
model without projection biases are the only torch parameters with no contract name
(``torch_names.unmapped_parameters``).

Masks. Contract: None or bool/int broadcastable to [B, h, Lq, Lk], nonzero = may attend.
``nn.MultiheadAttention``: bool, True = masked, ``attn_mask`` [Lq, Lk] or [B*h, Lq, Lk] and ``key_padding_mask``
[B, Lk]. ``F.scaled_dot_product_attention``: bool, True = may attend, broadcastable to [B, h, Lq, Lk].

Embeddings, positions and the projection have no ``nn.Transformer`` counterpart; ``TorchTransformerModel`` wraps
``nn.Transformer`` with an ``nn.Embedding`` per side, the float64 NumPy sinusoid table and an ``nn.Linear``.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from reference.oracles import numpy_ref, torch_ref
from reference.oracles.masks import MaskLike, contract_mask_4d
from reference.oracles.numpy_ref import CONTRACT_EPS, PROJECTIONS
from reference.spec import variants

def to_mha_masks(mask: MaskLike, *, batch: int, heads: int, len_q: int, len_k: int
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Contract mask -> (``attn_mask``, ``key_padding_mask``) for ``nn.MultiheadAttention`` (True = masked).

    [b, 1, 1, lk] (the blog's padding mask [B, 1, 1, Lk]) -> key_padding_mask [B, Lk];
    [1, 1, lq, lk] (causal [1, Lq, Lk], the blog's shared [1, Lq, Lk]) -> attn_mask [Lq, Lk];
    anything else ([B, 1, Lq, Lk], [B, h, Lq, Lk], ...) -> attn_mask [B*h, Lq, Lk] (batch-major, as torch wants).
    """
    m = contract_mask_4d(mask, batch=batch, heads=heads, len_q=len_q, len_k=len_k)
    if m is None:
        return None, None
    if m.shape[1] == 1 and m.shape[2] == 1:
        return None, ~m.expand(batch, 1, 1, len_k).reshape(batch, len_k)
    if m.shape[0] == 1 and m.shape[1] == 1:
        return ~m.expand(1, 1, len_q, len_k).reshape(len_q, len_k), None
    return ~m.expand(batch, heads, len_q, len_k).reshape(batch * heads, len_q, len_k), None


def from_mha_masks(attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, *, batch: int,
                   heads: int, len_q: int, len_k: int) -> torch.Tensor:
    """``nn.MultiheadAttention`` bool masks (True = masked) -> the contract's bool [B, h, Lq, Lk] (True = attend)."""
    keep = torch.ones(batch, heads, len_q, len_k, dtype=torch.bool)
    if attn_mask is not None:
        a = attn_mask.to(torch.bool)
        a = a.reshape(batch, heads, len_q, len_k) if a.dim() == 3 else a.expand(batch, heads, len_q, len_k)
        keep = keep & ~a.cpu()
    if key_padding_mask is not None:
        keep = keep & ~key_padding_mask.to(torch.bool).cpu()[:, None, None, :]
    return keep


def to_sdpa_mask(mask: MaskLike, *, batch: int, heads: int, len_q: int, len_k: int) -> torch.Tensor | None:
    """Contract mask -> ``F.scaled_dot_product_attention``'s bool mask (True = may attend), 4-d, broadcastable."""
    return contract_mask_4d(mask, batch=batch, heads=heads, len_q=len_q, len_k=len_k)


# --------------------------------------------------------------------------------------------------- loading
def _factory(weight: torch.Tensor) -> dict:
    return {"device": weight.device, "dtype": weight.dtype}


@torch.no_grad()
def _load_linear(dst: nn.Linear, src: nn.Module) -> None:
    """nn.Linear <- a contract linear (``weight`` [out, in], optional ``bias``; absent bias -> zeros)."""
    dst.weight.copy_(src.weight)
    if dst.bias is not None:
        bias = getattr(src, "bias", None)
        dst.bias.copy_(bias) if bias is not None else dst.bias.zero_()


@torch.no_grad()
def _load_norm(dst: nn.LayerNorm, src: nn.Module) -> None:
    """nn.LayerNorm <- LayerNormalization (``alpha`` -> weight, ``bias`` -> bias)."""
    dst.weight.copy_(src.alpha)
    dst.bias.copy_(src.bias)


def to_layer_norm(norm: nn.Module, *, eps: float = CONTRACT_EPS, features: int | None = None) -> nn.LayerNorm:
    """``nn.LayerNorm(features, eps=eps)`` holding the norm's ``alpha``/``bias`` (features: default the gain's size;
    a scalar gain, a contract deviation, is broadcast over ``features`` so the rest is still judged)."""
    ln = nn.LayerNorm(features or norm.alpha.shape[-1], eps=float(eps), **_factory(norm.alpha))
    _load_norm(ln, norm)
    return ln


class TorchFeedForward(nn.Sequential):
    """``nn.Linear -> nn.ReLU -> nn.Linear`` (``linear1``, ``linear2`` as in ``nn.TransformerEncoderLayer``)."""


def to_feed_forward(block: nn.Module) -> TorchFeedForward:
    """The feed-forward block as ``nn.Linear(d, d_ff) -> nn.ReLU() -> nn.Linear(d_ff, d)`` holding its weights."""
    l1, l2 = block.linear_1.weight, block.linear_2.weight  # (d_ff, d), (d, d_ff)
    seq = TorchFeedForward(nn.Linear(l1.shape[1], l1.shape[0], **_factory(l1)), nn.ReLU(),
                           nn.Linear(l2.shape[1], l2.shape[0], **_factory(l2)))
    _load_linear(seq[0], block.linear_1)
    _load_linear(seq[2], block.linear_2)
    return seq


#: Attribute of an adapter-built ``nn.MultiheadAttention`` naming the contract projections whose biases it holds
#: (``("w_q", "w_o")``, ...): their slices of ``in_proj_bias`` / ``out_proj.bias`` map back to ``<name>.bias``.
CONTRACT_BIASES = "contract_biases"


def projection_bias(block: nn.Module, name: str) -> torch.Tensor | None:
    """The bias [d] of the contract block's projection ``name`` ("w_q", ...), or None when it has none."""
    bias = getattr(getattr(block, name), "bias", None)
    return bias if isinstance(bias, torch.Tensor) else None


@torch.no_grad()
def _load_mha(dst: nn.MultiheadAttention, block: nn.Module) -> None:
    """in_proj = cat(W_q, W_k, W_v) [3d, d], out_proj = W_o; each bias the block's or zero (recorded under
    ``CONTRACT_BIASES``)."""
    d = dst.embed_dim
    dst.in_proj_weight.copy_(torch.cat([block.w_q.weight, block.w_k.weight, block.w_v.weight], dim=0))  # (3d, d)
    dst.out_proj.weight.copy_(block.w_o.weight)
    targets = {"w_q": dst.in_proj_bias[:d], "w_k": dst.in_proj_bias[d:2 * d], "w_v": dst.in_proj_bias[2 * d:],
               "w_o": dst.out_proj.bias}  # views: copying into them fills the torch biases
    for name in PROJECTIONS:
        bias = projection_bias(block, name)
        targets[name].copy_(bias) if bias is not None else targets[name].zero_()
    setattr(dst, CONTRACT_BIASES, tuple(name for name in PROJECTIONS if projection_bias(block, name) is not None))


def _d_model(block: nn.Module) -> int:
    """d_model of an attention block, from its parameters (``w_q.weight`` [d, d])."""
    return int(block.w_q.weight.shape[-1])


def to_multihead_attention(mha_block: nn.Module, *, h: int) -> nn.MultiheadAttention:
    """``nn.MultiheadAttention(embed_dim=d, num_heads=h, batch_first=True, bias=True)``: in_proj = cat(W_q, W_k, W_v)
    [3d, d], out_proj = W_o, biases the block's projection biases or zero (see the module docstring).

    h: the head count the caller built ``mha_block`` with."""
    mha = nn.MultiheadAttention(_d_model(mha_block), h, dropout=0.0, bias=True, batch_first=True,
                                **_factory(mha_block.w_q.weight))
    _load_mha(mha, mha_block)
    return mha


def _norm_first(variant: str | None) -> bool:
    """``norm_first`` of torch's layers under ``variant`` (None: the run's): True for pre-norm, False for post-norm."""
    return variants.resolve(variant) == variants.PRE_NORM


def to_encoder_layer(encoder_block: nn.Module, *, h: int, eps: float = CONTRACT_EPS, variant: str | None = None
                     ) -> nn.TransformerEncoderLayer:
    """``nn.TransformerEncoderLayer(norm_first=(variant == "pre-norm"), layer_norm_eps=eps)`` computing
    ``encoder_block`` with h heads; ``residual_connections[i].norm`` -> ``norm{i+1}``."""
    attn, ff = encoder_block.self_attention_block, encoder_block.feed_forward_block
    norms = [rc.norm for rc in encoder_block.residual_connections]
    layer = nn.TransformerEncoderLayer(
        _d_model(attn), h, dim_feedforward=ff.linear_1.weight.shape[0], dropout=0.0, activation="relu",
        layer_norm_eps=float(eps), batch_first=True, norm_first=_norm_first(variant), bias=True,
        **_factory(attn.w_q.weight))
    _load_mha(layer.self_attn, attn)
    _load_linear(layer.linear1, ff.linear_1)
    _load_linear(layer.linear2, ff.linear_2)
    _load_norm(layer.norm1, norms[0])
    _load_norm(layer.norm2, norms[1])
    return layer


def to_decoder_layer(decoder_block: nn.Module, *, h: int, eps: float = CONTRACT_EPS, variant: str | None = None
                     ) -> nn.TransformerDecoderLayer:
    """``nn.TransformerDecoderLayer(norm_first=(variant == "pre-norm"), layer_norm_eps=eps)`` with h heads:
    self_attn, multihead_attn (cross), norm1..3 (``residual_connections[0..2].norm``), linear1..2."""
    attn, cross, ff = (decoder_block.self_attention_block, decoder_block.cross_attention_block,
                       decoder_block.feed_forward_block)
    norms = [rc.norm for rc in decoder_block.residual_connections]
    layer = nn.TransformerDecoderLayer(
        _d_model(attn), h, dim_feedforward=ff.linear_1.weight.shape[0], dropout=0.0, activation="relu",
        layer_norm_eps=float(eps), batch_first=True, norm_first=_norm_first(variant), bias=True,
        **_factory(attn.w_q.weight))
    _load_mha(layer.self_attn, attn)
    _load_mha(layer.multihead_attn, cross)
    _load_linear(layer.linear1, ff.linear_1)
    _load_linear(layer.linear2, ff.linear_2)
    for dst, src in zip((layer.norm1, layer.norm2, layer.norm3), norms):
        _load_norm(dst, src)
    return layer


def _check_layers(stack: nn.Module, where: str, N: int | None, d_ff: int | None) -> None:
    """``numpy_ref.check_structure`` on a contract stack: its distinct blocks against N, their feed-forward widths
    against d_ff (None: not asked)."""
    blocks = list(stack.layers)
    numpy_ref.check_structure(where, layers=len({id(b) for b in blocks}), N=N, d_ff=d_ff,
                              widths=[b.feed_forward_block.linear_1.weight.shape[0] for b in blocks])


def to_encoder(encoder: nn.Module, *, h: int, eps: float = CONTRACT_EPS, nested_tensor: bool = False,
               N: int | None = None, d_ff: int | None = None, variant: str | None = None) -> nn.TransformerEncoder:
    """``nn.TransformerEncoder`` with one converted layer per contract block (h heads, every norm ``eps``) and final
    norm = ``encoder.norm``. N, d_ff: the constructor call's (``numpy_ref.StructureMismatch`` when the stack holds
    another count of distinct blocks or feed-forward width; None: the stack's own).

    ``nested_tensor=True`` opts into the nested-tensor ("sparsity") fast path that torch refuses at construction
    for ``norm_first=True`` layers (``use_nested_tensor`` is set back to True after the refusal; post-norm layers
    take it anyway); it then runs in
    eval mode, without grad, with a left-aligned key padding mask and no other mask (docs/divergences.md).
    """
    _check_layers(encoder, "the encoder", N, d_ff)
    layers = [to_encoder_layer(block, h=h, eps=eps, variant=variant) for block in encoder.layers]
    norm = to_layer_norm(encoder.norm, eps=eps, features=layers[0].linear1.in_features)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
        stack = nn.TransformerEncoder(layers[0], num_layers=len(layers), norm=norm, enable_nested_tensor=nested_tensor)
    stack.layers = nn.ModuleList(layers)
    stack.use_nested_tensor = nested_tensor
    return stack


def to_decoder(decoder: nn.Module, *, h: int, eps: float = CONTRACT_EPS, N: int | None = None,
               d_ff: int | None = None, variant: str | None = None) -> nn.TransformerDecoder:
    """``nn.TransformerDecoder`` with one converted layer per contract block (h heads, every norm ``eps``) and final
    norm = ``decoder.norm``; N, d_ff as in ``to_encoder``."""
    _check_layers(decoder, "the decoder", N, d_ff)
    layers = [to_decoder_layer(block, h=h, eps=eps, variant=variant) for block in decoder.layers]
    norm = to_layer_norm(decoder.norm, eps=eps, features=layers[0].linear1.in_features)
    stack = nn.TransformerDecoder(layers[0], num_layers=len(layers), norm=norm)
    stack.layers = nn.ModuleList(layers)
    return stack


def to_transformer(model: nn.Module, *, h: int, eps: float = CONTRACT_EPS, N: int | None = None,
                   d_ff: int | None = None, variant: str | None = None) -> nn.Transformer:
    """``nn.Transformer(nhead=h, layer_norm_eps=eps, batch_first=True, norm_first=(variant == "pre-norm"))`` holding
    the contract model's encoder and decoder (h, N, d_ff: what the model was built with;
    ``numpy_ref.StructureMismatch`` when it holds another N or d_ff; None: the model's own; variant None: the run's).

    Embeddings, positions and the projection stay outside (see ``TorchTransformerModel``).
    """
    encoder = to_encoder(model.encoder, h=h, eps=eps, N=N, d_ff=d_ff, variant=variant)
    decoder = to_decoder(model.decoder, h=h, eps=eps, N=N, d_ff=d_ff, variant=variant)
    first = encoder.layers[0]
    # nn.Transformer re-initialises every matrix it holds (Xavier): build it around placeholders, then attach.
    transformer = nn.Transformer(
        first.self_attn.embed_dim, h, num_encoder_layers=N or len(encoder.layers),
        num_decoder_layers=N or len(decoder.layers), dim_feedforward=d_ff or first.linear1.out_features, dropout=0.0,
        custom_encoder=nn.Identity(), custom_decoder=nn.Identity(), layer_norm_eps=float(eps),
        batch_first=True, norm_first=first.norm_first, bias=True, **_factory(first.linear1.weight))
    transformer.encoder, transformer.decoder = encoder, decoder
    return transformer


# --------------------------------------------------------------------------------------------------- running
def mha_forward(mha: nn.MultiheadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: MaskLike,
                *, need_weights: bool = False) -> torch.Tensor:
    """``nn.MultiheadAttention`` on contract inputs: q [B, Lq, d], k/v [B, Lk, d], contract mask -> [B, Lq, d].

    Pass the same tensor as q, k and v (and call in eval mode without grad) to let torch take its fused path.
    """
    attn_mask, kpm = to_mha_masks(mask, batch=q.shape[0], heads=mha.num_heads, len_q=q.shape[1], len_k=k.shape[1])
    out, _ = mha(q, k, v, key_padding_mask=_on(kpm, q), attn_mask=_on(attn_mask, q), need_weights=need_weights)
    return out


def sdpa_attention(mha_block: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   mask: MaskLike, *, h: int) -> torch.Tensor:
    """``torch_ref.multi_head_attention`` on the block's own projections (biases included when it has them):
    ``F.scaled_dot_product_attention`` with h heads; [B, Lq, d] -> [B, Lq, d]. Gradients reach the block."""
    return torch_ref.multi_head_attention(q, k, v, mask, dict(mha_block.named_parameters()), h,
                                          need_weights=False)[0]


def encoder_forward(module: nn.TransformerEncoderLayer | nn.TransformerEncoder, x: torch.Tensor, mask: MaskLike
                    ) -> torch.Tensor:
    """A torch encoder layer or stack on x [B, L, d] with a contract mask -> [B, L, d]."""
    heads = _first_attention(module).num_heads
    attn_mask, kpm = to_mha_masks(mask, batch=x.shape[0], heads=heads, len_q=x.shape[1], len_k=x.shape[1])
    return module(x, _on(attn_mask, x), _on(kpm, x))


def decoder_forward(module: nn.TransformerDecoderLayer | nn.TransformerDecoder, x: torch.Tensor,
                    memory: torch.Tensor, src_mask: MaskLike, tgt_mask: MaskLike) -> torch.Tensor:
    """A torch decoder layer or stack: x [B, Lt, d], memory [B, Ls, d], contract masks -> [B, Lt, d]."""
    heads = _first_attention(module).num_heads
    B, Lt, Ls = x.shape[0], x.shape[1], memory.shape[1]
    tgt_attn, tgt_kpm = to_mha_masks(tgt_mask, batch=B, heads=heads, len_q=Lt, len_k=Lt)
    mem_attn, mem_kpm = to_mha_masks(src_mask, batch=B, heads=heads, len_q=Lt, len_k=Ls)
    return module(x, memory, _on(tgt_attn, x), _on(mem_attn, x), _on(tgt_kpm, x), _on(mem_kpm, x))


def _first_attention(module: nn.Module) -> nn.MultiheadAttention:
    layer = module.layers[0] if hasattr(module, "layers") else module
    return layer.self_attn


def _on(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if mask is None else mask.to(like.device)


class TorchTransformerModel(nn.Module):
    """``nn.Transformer`` between an ``nn.Embedding`` (times sqrt(d)) + sinusoid table and an ``nn.Linear``.

    Driven like the contract model: ``encode(src, src_mask)``, ``decode(memory, src_mask, tgt, tgt_mask)``,
    ``project(x)``; ``forward(src, tgt, src_mask, tgt_mask)`` goes through ``nn.Transformer.forward`` end to end.
    The positional tables come from the float64 NumPy formula, rounded once to the model's dtype.
    """

    def __init__(self, model: nn.Module, *, h: int, eps: float = CONTRACT_EPS, N: int | None = None,
                 d_ff: int | None = None, variant: str | None = None) -> None:
        """h: the head count ``model`` was built with; eps: its norms' (the contract's default unless the caller
        built the norms with another); N, d_ff: its layer count and feed-forward width (``to_transformer``);
        variant: its residual layout (None: the run's)."""
        super().__init__()
        self.transformer = to_transformer(model, h=h, eps=eps, N=N, d_ff=d_ff, variant=variant)
        self.d_model = self.transformer.d_model
        self.h = self.transformer.nhead
        self.src_embed = nn.Embedding.from_pretrained(model.src_embed.embedding.weight.detach().clone(), freeze=False)
        self.tgt_embed = nn.Embedding.from_pretrained(model.tgt_embed.embedding.weight.detach().clone(), freeze=False)
        proj = model.projection_layer.proj
        self.projection = nn.Linear(proj.weight.shape[1], proj.weight.shape[0], **_factory(proj.weight))
        _load_linear(self.projection, proj)
        like = proj.weight
        for name, pos in (("src_pe", model.src_pos), ("tgt_pe", model.tgt_pos)):
            table = numpy_ref.positional_encoding_table(int(pos.seq_len), self.d_model)
            self.register_buffer(name, torch.from_numpy(table).to(device=like.device, dtype=like.dtype))

    def embed_src(self, src: torch.Tensor) -> torch.Tensor:
        """Long[B, Ls] -> ``embedding * sqrt(d) + pe`` [B, Ls, d]."""
        return self.src_embed(src) * math.sqrt(self.d_model) + self.src_pe[: src.shape[1]]

    def embed_tgt(self, tgt: torch.Tensor) -> torch.Tensor:
        """Long[B, Lt] -> ``embedding * sqrt(d) + pe`` [B, Lt, d]."""
        return self.tgt_embed(tgt) * math.sqrt(self.d_model) + self.tgt_pe[: tgt.shape[1]]

    def encode(self, src: torch.Tensor, src_mask: MaskLike) -> torch.Tensor:
        return encoder_forward(self.transformer.encoder, self.embed_src(src), src_mask)

    def decode(self, memory: torch.Tensor, src_mask: MaskLike, tgt: torch.Tensor,
               tgt_mask: MaskLike) -> torch.Tensor:
        return decoder_forward(self.transformer.decoder, self.embed_tgt(tgt), memory, src_mask, tgt_mask)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: MaskLike = None,
                tgt_mask: MaskLike = None) -> torch.Tensor:
        """Logits [B, Lt, vocab] through ``nn.Transformer.forward``."""
        x, y = self.embed_src(src), self.embed_tgt(tgt)
        B, Ls, Lt = x.shape[0], x.shape[1], y.shape[1]
        src_attn, src_kpm = to_mha_masks(src_mask, batch=B, heads=self.h, len_q=Ls, len_k=Ls)
        mem_attn, mem_kpm = to_mha_masks(src_mask, batch=B, heads=self.h, len_q=Lt, len_k=Ls)
        tgt_attn, tgt_kpm = to_mha_masks(tgt_mask, batch=B, heads=self.h, len_q=Lt, len_k=Lt)
        out = self.transformer(x, y, src_mask=_on(src_attn, x), tgt_mask=_on(tgt_attn, x),
                               memory_mask=_on(mem_attn, x), src_key_padding_mask=_on(src_kpm, x),
                               tgt_key_padding_mask=_on(tgt_kpm, x), memory_key_padding_mask=_on(mem_kpm, x))
        return self.project(out)


def set_dropout(module: nn.Module, p: float) -> nn.Module:
    """Every dropout of torch's ``module`` at rate p (the adapters build them at 0): its ``nn.Dropout`` modules and
    each ``nn.MultiheadAttention``'s dropout on the attention weights. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = float(p)
        elif isinstance(m, nn.MultiheadAttention):
            m.dropout = float(p)
    return module
