"""Read a contract module's parameters and hyper-parameters into the form the NumPy oracle takes.

Reaches modules only by the contract's attribute names (``h`` on attention blocks, ``eps`` on norms), never by
``isinstance`` on an implementation's classes, so it works on any implementation of the contract.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from . import conditioning


def to_numpy(x: torch.Tensor | None) -> np.ndarray | None:
    """A detached CPU NumPy copy of ``x`` (floating tensors become float64; bool/int keep their dtype).

    Inside ``reference.conditioning.perturbation`` floating copies come back perturbed by one rounding: every input
    and weight the oracle reads passes here, which is how the oracle's sensitivity is measured."""
    if x is None:
        return None
    x = x.detach().cpu()
    return conditioning.perturb((x.to(torch.float64) if x.is_floating_point() else x).numpy().copy())


def extract_weights(module: nn.Module) -> dict[str, np.ndarray]:
    """Every parameter of ``module`` by its dotted ``named_parameters()`` name, as a float64 NumPy array."""
    return {name: to_numpy(p) for name, p in module.named_parameters()}


def component_hparams(module: nn.Module) -> dict[str, Any]:
    """{"h": ..., "eps": ...} of the first attention block (has ``h``, ``d_k``) and first norm (has ``eps``, ``alpha``)
    found in ``module`` or below, in ``named_modules()`` order; a key is absent when no such submodule exists."""
    found: dict[str, Any] = {}
    for _, m in module.named_modules():
        if "h" not in found and hasattr(m, "h") and hasattr(m, "d_k"):
            found["h"] = int(m.h)
        if "eps" not in found and hasattr(m, "eps") and hasattr(m, "alpha"):
            found["eps"] = float(m.eps)
    return found


def model_hparams(model: nn.Module) -> dict[str, Any]:
    """{"h": ..., "eps": ...} of a contract Transformer: the first encoder block's ``h``, the encoder norm's ``eps``."""
    return {"h": int(model.encoder.layers[0].self_attention_block.h), "eps": float(model.encoder.norm.eps)}
