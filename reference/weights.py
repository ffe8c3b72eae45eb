"""Read a contract module's parameters into the form the NumPy oracle takes.

Reaches modules only by ``named_parameters()``, never by ``isinstance`` on an implementation's classes, so it works
on any implementation of the contract. Hyper-parameters are never read back from a module: a norm that stored the
wrong ``eps`` (or a block the wrong ``h``) would otherwise be judged by its own mistake. The oracle gets ``h`` from
the configuration the kit built the module with, and ``eps`` = ``CONTRACT_EPS`` (the kit never passes another).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import conditioning
from .numpy_ref import CONTRACT_EPS

__all__ = ["CONTRACT_EPS", "extract_weights", "to_numpy"]


def to_numpy(x: torch.Tensor | None) -> np.ndarray | None:
    """A detached CPU NumPy copy of ``x`` (floating tensors become float64; bool/int keep their dtype).

    Inside ``reference.conditioning.perturbation`` floating copies come back perturbed by one rounding: every input
    and weight the oracle reads passes here, which is how the oracle's sensitivity is measured."""
    if x is None:
        return None
    x = x.detach().cpu()
    return conditioning.perturb((x.to(torch.float64) if x.is_floating_point() else x).numpy().copy())


def extract_weights(module: nn.Module) -> dict[str, np.ndarray]:
    """Every parameter of ``module`` by its dotted ``named_parameters()`` name, as a float64 NumPy array (the
    attention projections' biases included when the module has them)."""
    return {name: to_numpy(p) for name, p in module.named_parameters()}
