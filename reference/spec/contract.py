"""Reach any implementation of the contract by its public names only.

The contract is the blog's API (class names, constructor arguments, attribute names) plus the optional extras this
project adds (``device=``/``dtype=`` keywords, ``causal_mask``, ``padding_mask``, ``Transformer.forward``). Code
here builds components of an implementation in a requested dtype/device whether or not it has the extras, and
says which extras are missing so tests can skip with a reason.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Iterator

import torch
from torch import nn

from reference.spec import variants

DEFAULT_IMPL = "scratch_transformer"


def takes_factory_kwargs(cls_or_fn: Any) -> bool:
    """True when the constructor accepts ``device=`` and ``dtype=`` keywords."""
    try:
        params = inspect.signature(cls_or_fn).parameters
    except (TypeError, ValueError):
        return False
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return has_var_kw or ("device" in params and "dtype" in params)


def missing_extras(impl: ModuleType, *needs: str) -> list[str]:
    """Which of the requested extras the implementation lacks.

    Recognised needs: ``causal_mask``, ``padding_mask``, ``Transformer.forward``, ``factory_kwargs``.
    """
    missing = []
    for need in needs:
        if need == "factory_kwargs":
            if not takes_factory_kwargs(impl.MultiHeadAttentionBlock):
                missing.append("device=/dtype= constructor keywords")
        elif need == "Transformer.forward":
            if getattr(impl.Transformer, "forward", nn.Module.forward) is nn.Module.forward:
                missing.append("Transformer.forward")
        elif not callable(getattr(impl, need, None)):
            missing.append(need)
    return missing


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily make ``dtype`` torch's default floating dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


#: Environment variable naming a ``torch.compile`` backend; see ``compile_backend``.
COMPILE_ENV = "SCRATCH_TRANSFORMER_COMPILE"
_COMPILE: dict[str, str | None] = {"backend": os.environ.get(COMPILE_ENV) or None}


def compile_backend() -> str | None:
    """The ``torch.compile`` backend every module ``construct`` and ``build_model`` return is compiled with (see
    ``compile_module``); None = eager. Set by ``use_compile`` (``pytest --compile``, ``report --compile``) or the
    environment (``SCRATCH_TRANSFORMER_COMPILE=inductor``)."""
    return _COMPILE["backend"]


def use_compile(backend: str | None) -> None:
    """Compile every module built from now on with ``backend`` (None: eager)."""
    _COMPILE["backend"] = backend or None



_MASKS = {"per_head": True}


def per_head_masks() -> bool:
    """Whether the implementation under test takes a mask per head (the contract's ``[B, h, Lq, Lk]``). False when
    its map says its modules take masks without the head dimension (``masks = "no-head-dim"``): the kit then draws
    masks shared by the heads (``[B, 1, Lq, Lk]``), the only ones such a model can be given."""
    return _MASKS["per_head"]


def use_per_head_masks(flag: bool) -> None:
    _MASKS["per_head"] = bool(flag)


def run_settings() -> tuple[str, bool, str | None]:
    """The run's settings a session or a report sets for its implementation: (variant, per-head masks, compile
    backend), to give back with ``use_run_settings``."""
    return variants.variant(), per_head_masks(), compile_backend()


def use_run_settings(settings: tuple[str, bool, str | None]) -> None:
    variant, per_head, backend = settings
    variants.use_variant(variant)
    use_per_head_masks(per_head)
    use_compile(backend)


@contextlib.contextmanager
def kept_run_settings() -> Iterator[None]:
    """The run's settings as they were before the block, whatever it set (a report or a session inside another)."""
    saved = run_settings()
    try:
        yield
    finally:
        use_run_settings(saved)

def compile_module(module: nn.Module, backend: str) -> nn.Module:
    """Compile ``module`` in place (``nn.Module.compile``), and its direct children, with ``backend``.

    The module stays the same object, so every contract attribute still resolves; compiling the children too
    means ``Transformer.encode``/``decode``/``project`` run compiled code. Dynamo's recompile limit is lifted and
    hitting it made an error, so a suite that builds many configurations keeps compiling instead of silently
    falling back to eager.
    """
    config = torch._dynamo.config
    for name in ("recompile_limit", "accumulated_recompile_limit", "cache_size_limit", "accumulated_cache_size_limit"):
        if hasattr(config, name):  # the names changed across torch versions
            setattr(config, name, 1_000_000)
    for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if hasattr(config, name):
            setattr(config, name, True)
    for m in (module, *module.children()):
        if type(m).forward is not nn.Module.forward:  # containers (ModuleList) have no forward
            m.compile(backend=backend)
    return module


def construct(factory: Any, *args: Any, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              **kwargs: Any) -> Any:
    """Call a contract constructor so its parameters and buffers come out in ``dtype`` on ``device``.

    Uses the ``device=``/``dtype=`` keywords when the implementation has them; otherwise builds under
    ``torch.set_default_dtype`` (float32/float64) and moves the result with ``.to``, as a user of the blog would.
    Compiled with ``compile_backend`` when that is set.
    """
    if takes_factory_kwargs(factory):
        module = factory(*args, device=device, dtype=dtype, **kwargs)
    else:
        build_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        with default_dtype(build_dtype):
            module = factory(*args, **kwargs)
        module = module.to(device=device, dtype=dtype)
    if compile_backend() and isinstance(module, nn.Module):
        compile_module(module, compile_backend())
    return module


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of a full model, as ``build_transformer`` takes them."""

    src_vocab_size: int = 11
    tgt_vocab_size: int = 13
    src_seq_len: int = 16
    tgt_seq_len: int = 16
    d_model: int = 16
    N: int = 2
    h: int = 2
    dropout: float = 0.0
    d_ff: int = 32

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


def build_model(impl: ModuleType, cfg: ModelConfig, *, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> nn.Module:
    """``impl.build_transformer(**cfg)`` in ``dtype`` on ``device``."""
    return construct(impl.build_transformer, **cfg.kwargs(), device=device, dtype=dtype)


@torch.no_grad()
def randomize_parameters_(module: nn.Module, seed: int, *, scale: float = 1.0) -> nn.Module:
    """Give every parameter a random, non-default value (reproducible from ``seed``), in place.

    Matrices: uniform in the Xavier bound times ``scale``; vectors named ``alpha`` (norm gains): uniform in
    [0.5, 1.5]; other vectors (biases, norm shifts): uniform in [-0.5, 0.5]. Nothing stays at its initial value,
    so no component can hide behind ones/zeros.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if p.dim() > 1:
            fan_out, fan_in = p.shape[0], p[0].numel()
            bound = scale * (6.0 / (fan_in + fan_out)) ** 0.5
            value = (torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        elif name.endswith("alpha"):
            value = 0.5 + torch.rand(p.shape, generator=gen, dtype=torch.float64)
        else:
            value = torch.rand(p.shape, generator=gen, dtype=torch.float64) - 0.5
        p.copy_(value.to(p.dtype))
    return module
