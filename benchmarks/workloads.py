"""What one timed step is: the encoder-decoder core of both models on the same embedded inputs and weights.

``nn.Transformer`` has no embeddings, positions or projection, so both sides time only the core: the contract
model's ``decoder(y, encoder(x, src_mask), src_mask, tgt_mask)`` (``EncoderDecoder``) against
``nn.Transformer(x, y, ...)`` built by ``reference.oracles.torch_adapters.to_transformer`` from the same weights
(``batch_first=True``, ``norm_first=True``, zero attention-projection biases). x, y: [B, L, d_model].

Masks ("masks" rows): a key-padding mask on the source (lengths drawn in [L/2, L], the first sequence full) used
by the encoder self-attention and the decoder cross-attention, and a causal mask on the target. The contract model
gets them as bool [B, 1, 1, L] and [1, 1, L, L] (True = may attend); ``nn.Transformer`` as a user would pass them:
``src_key_padding_mask`` = ``memory_key_padding_mask`` = bool [B, L] (True = pad), ``tgt_mask`` =
``nn.Transformer.generate_square_subsequent_mask(L)`` with ``tgt_is_causal=True``. "none" rows pass no mask.

Modes: "forward" = eval mode under ``torch.no_grad()``; "train" = train mode (dropout p = 0), forward then
``backward`` of a fixed random output gradient, parameter grads reset to None before each step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable

import torch
from torch import nn

from reference.spec.contract import build_model
from reference.oracles.torch_adapters import to_transformer

from .configs import BenchConfig

MODES = ("forward", "train")
MASKS = ("masks", "none")

#: Engine names. The baseline is nn.Transformer on its regular path (``torch.backends.mha`` fast path off).
SCRATCH, COMPILED, TORCH, TORCH_FAST = "scratch", "scratch compiled", "nn.Transformer", "nn.Transformer fast path"
BASELINE = TORCH


class EncoderDecoder(nn.Module):
    """The contract model's core: ``decoder(y, encoder(x, src_mask), src_mask, tgt_mask)``; -> [B, Lt, d]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.decoder = model.decoder

    def forward(self, x: torch.Tensor, y: torch.Tensor, src_mask: torch.Tensor | None,
                tgt_mask: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(y, self.encoder(x, src_mask), src_mask, tgt_mask)


@dataclass
class Engine:
    """One contender: ``step()`` runs one timed step; ``output()`` its forward (checked against the baseline)."""

    name: str
    step: Callable[[], object]
    output: Callable[[], torch.Tensor]  # the step's forward output [B, L, d], to check engines agree
    compile_s: float | None = None  # first-call (compilation) time of a compiled engine


@dataclass
class Pair:
    """Both models with the same weights, and the inputs of one configuration."""

    cfg: BenchConfig
    core: EncoderDecoder
    twin: nn.Transformer
    x: torch.Tensor
    y: torch.Tensor
    grad: torch.Tensor
    keep: torch.Tensor  # bool [B, L], True = real source token
    others: dict[str, EncoderDecoder] = field(default_factory=dict)  # more implementations, same weights


def add_implementation(pair: Pair, name: str, impl: ModuleType) -> None:
    """Time another contract implementation in the same rounds (engine ``name``), loaded with the same weights."""
    first = pair.core.encoder.layers[0].self_attention_block.w_q.weight
    model = build_model(impl, pair.cfg.model_config(), device=first.device, dtype=first.dtype)
    core = EncoderDecoder(model)
    core.load_state_dict(pair.core.state_dict())  # the contract's names are the state-dict keys
    pair.others[name] = core


def make_pair(impl: ModuleType, cfg: BenchConfig, *, device: str, dtype: torch.dtype, seed: int = 0) -> Pair:
    """Build the contract model (``build_transformer``) and its ``nn.Transformer`` twin, and seeded inputs."""
    torch.manual_seed(seed)
    model = build_model(impl, cfg.model_config(), device=device, dtype=dtype)
    twin = to_transformer(model, h=cfg.h, N=cfg.N, d_ff=cfg.d_ff).to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    shape = (cfg.B, cfg.L, cfg.d_model)
    x, y, grad = (torch.randn(shape, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
    lengths = torch.randint(cfg.L // 2, cfg.L + 1, (cfg.B,), generator=gen)
    lengths[0] = cfg.L
    keep = (torch.arange(cfg.L)[None, :] < lengths[:, None]).to(device)
    return Pair(cfg, EncoderDecoder(model), twin, x, y, grad, keep)


def _scratch_masks(pair: Pair, masks: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if masks == "none":
        return None, None
    L = pair.cfg.L
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=pair.x.device))[None, None]  # (1, 1, L, L)
    return pair.keep[:, None, None, :], causal  # (B, 1, 1, L), (1, 1, L, L)


def _torch_kwargs(pair: Pair, masks: str) -> dict:
    if masks == "none":
        return {}
    pad = ~pair.keep  # (B, L), True = pad
    causal = nn.Transformer.generate_square_subsequent_mask(pair.cfg.L, device=pair.x.device, dtype=pair.x.dtype)
    return {"tgt_mask": causal, "tgt_is_causal": True, "src_key_padding_mask": pad, "memory_key_padding_mask": pad}


def _step(fn: Callable[[], torch.Tensor], module: nn.Module, mode: str, grad: torch.Tensor) -> Callable[[], object]:
    if mode == "forward":
        def forward_step() -> object:
            with torch.no_grad():
                return fn()
        return forward_step
    params = [p for p in module.parameters() if p.requires_grad]

    def train_step() -> object:
        for p in params:
            p.grad = None
        fn().backward(grad)
    return train_step


def _regular_path(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``fn`` with torch's fused MHA / encoder-layer fast path switched off (``torch.backends.mha``)."""
    def regular() -> torch.Tensor:
        was = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            return fn()
        finally:
            torch.backends.mha.set_fastpath_enabled(was)
    return regular


def engines(pair: Pair, mode: str, masks: str, *, compiled: nn.Module | None = None) -> list[Engine]:
    """The contenders for one (mode, masks) cell, models put in the mode's train/eval state."""
    training = mode == "train"
    pair.core.train(training)
    pair.twin.train(training)
    src_mask, tgt_mask = _scratch_masks(pair, masks)
    kwargs = _torch_kwargs(pair, masks)
    x, y = pair.x, pair.y

    def scratch() -> torch.Tensor:
        return pair.core(x, y, src_mask, tgt_mask)

    def torch_model() -> torch.Tensor:
        return pair.twin(x, y, **kwargs)

    regular = _regular_path(torch_model)
    out = [Engine(SCRATCH, _step(scratch, pair.core, mode, pair.grad), scratch),
           Engine(TORCH, _step(regular, pair.twin, mode, pair.grad), regular)]
    if mode == "forward":  # the fused path only exists for inference
        out.append(Engine(TORCH_FAST, _step(torch_model, pair.twin, mode, pair.grad), torch_model))
    for name, core in pair.others.items():
        core.train(training)

        def other(core: EncoderDecoder = core) -> torch.Tensor:
            return core(x, y, src_mask, tgt_mask)

        out.append(Engine(name, _step(other, core, mode, pair.grad), other))
    if compiled is not None:
        compiled.train(training)

        def scratch_compiled() -> torch.Tensor:
            return compiled(x, y, src_mask, tgt_mask)

        step = _step(scratch_compiled, pair.core, mode, pair.grad)
        start = time.perf_counter()
        step()  # compiles (one graph per mode and mask setting)
        _sync(x.device)
        out.append(Engine(COMPILED, step, scratch_compiled, compile_s=time.perf_counter() - start))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
