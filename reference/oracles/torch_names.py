"""The contract's names for the parameters of torch's modules built by ``torch_adapters``.

``nn.MultiheadAttention`` fuses ``w_q``/``w_k``/``w_v`` into ``in_proj_weight`` [3d, d] (and their biases into
``in_proj_bias``), ``nn.LayerNorm`` calls ``alpha`` ``weight``, the encoder layer calls the feed-forward block's
linears ``linear1``/``linear2`` and the residuals' norms ``norm1``..``norm3``: ``by_contract_name`` undoes all of it,
so a torch gradient can be compared with the implementation's under ``named_parameters()``'s names.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn

from reference.oracles.torch_adapters import CONTRACT_BIASES, TorchFeedForward, TorchTransformerModel

NameMap = Iterator[tuple[str, str, "slice | None"]]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _name_pairs(module: nn.Module, tp: str = "", cp: str = "") -> NameMap:
    """(torch parameter name, contract parameter name, row slice of the torch tensor or None), recursively."""
    j = _join
    if isinstance(module, TorchTransformerModel):
        yield "src_embed.weight", "src_embed.embedding.weight", None
        yield "tgt_embed.weight", "tgt_embed.embedding.weight", None
        yield from _name_pairs(module.projection, "projection", "projection_layer.proj")
        yield from _name_pairs(module.transformer, "transformer", cp)
    elif isinstance(module, TorchFeedForward):
        yield from _name_pairs(module[0], j(tp, "0"), j(cp, "linear_1"))
        yield from _name_pairs(module[2], j(tp, "2"), j(cp, "linear_2"))
    elif isinstance(module, nn.Transformer):
        yield from _name_pairs(module.encoder, j(tp, "encoder"), j(cp, "encoder"))
        yield from _name_pairs(module.decoder, j(tp, "decoder"), j(cp, "decoder"))
    elif isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)):
        for i, layer in enumerate(module.layers):
            yield from _name_pairs(layer, j(tp, f"layers.{i}"), j(cp, f"layers.{i}"))
        if module.norm is not None:
            yield from _name_pairs(module.norm, j(tp, "norm"), j(cp, "norm"))
    elif isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        yield from _name_pairs(module.self_attn, j(tp, "self_attn"), j(cp, "self_attention_block"))
        if isinstance(module, nn.TransformerDecoderLayer):
            yield from _name_pairs(module.multihead_attn, j(tp, "multihead_attn"), j(cp, "cross_attention_block"))
        yield from _name_pairs(module.linear1, j(tp, "linear1"), j(cp, "feed_forward_block.linear_1"))
        yield from _name_pairs(module.linear2, j(tp, "linear2"), j(cp, "feed_forward_block.linear_2"))
        norms = ("norm1", "norm2", "norm3") if isinstance(module, nn.TransformerDecoderLayer) else ("norm1", "norm2")
        for i, norm in enumerate(norms):
            yield from _name_pairs(getattr(module, norm), j(tp, norm), j(cp, f"residual_connections.{i}.norm"))
    elif isinstance(module, nn.MultiheadAttention):
        d, biases = module.embed_dim, getattr(module, CONTRACT_BIASES, ())
        for i, name in enumerate(("w_q", "w_k", "w_v")):
            yield j(tp, "in_proj_weight"), j(cp, f"{name}.weight"), slice(i * d, (i + 1) * d)
            if name in biases:
                yield j(tp, "in_proj_bias"), j(cp, f"{name}.bias"), slice(i * d, (i + 1) * d)
        yield j(tp, "out_proj.weight"), j(cp, "w_o.weight"), None
        if "w_o" in biases:
            yield j(tp, "out_proj.bias"), j(cp, "w_o.bias"), None
    elif isinstance(module, nn.LayerNorm):
        yield j(tp, "weight"), j(cp, "alpha"), None
        yield j(tp, "bias"), j(cp, "bias"), None
    elif isinstance(module, nn.Linear):
        yield j(tp, "weight"), j(cp, "weight"), None
        if module.bias is not None:
            yield j(tp, "bias"), j(cp, "bias"), None
    else:
        raise TypeError(f"no contract names for {type(module).__name__}")


def by_contract_name(module: nn.Module, get: Callable[[torch.Tensor], torch.Tensor | None]
                     ) -> dict[str, torch.Tensor | None]:
    """``get(parameter)`` of every torch parameter that has a contract counterpart, keyed by the contract's
    ``named_parameters()`` name (``in_proj_weight`` split into ``w_q``/``w_k``/``w_v``; ``in_proj_bias`` likewise
    into ``w_q.bias``/... and ``out_proj.bias`` as ``w_o.bias`` where the contract block had those biases)."""
    params = dict(module.named_parameters())
    out: dict[str, torch.Tensor | None] = {}
    for torch_name, contract_name, rows in _name_pairs(module):
        value = get(params[torch_name])
        out[contract_name] = value if value is None or rows is None else value[rows]
    return out


def params_by_contract_name(module: nn.Module) -> dict[str, torch.Tensor]:
    """The torch module's parameters under the contract's names (to check an adapter loaded every weight)."""
    return by_contract_name(module, lambda p: p.detach())


def grads_by_contract_name(module: nn.Module) -> dict[str, torch.Tensor | None]:
    """The torch module's ``.grad`` under the contract's names (None where no gradient was accumulated)."""
    return by_contract_name(module, lambda p: p.grad)


def unmapped_parameters(module: nn.Module) -> list[str]:
    """Torch parameter names with no contract counterpart: the zero ``in_proj_bias`` / ``out_proj.bias`` of
    attention blocks whose projections have no biases."""
    mapped = {torch_name for torch_name, _, _ in _name_pairs(module)}
    return [name for name, _ in module.named_parameters() if name not in mapped]
