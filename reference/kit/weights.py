"""Read a contract module's parameters into the form the NumPy oracle takes.

Reaches modules only by ``named_parameters()``, never by ``isinstance`` on an implementation's classes, so it works
on any implementation of the contract. Hyper-parameters are never read back from a module: a norm that stored the
wrong ``eps`` (or a block the wrong ``h``) would otherwise be judged by its own mistake. The oracle gets ``h`` from
the configuration the kit built the module with, and ``eps`` = ``CONTRACT_EPS`` (the kit never passes another).
"""

from __future__ import annotations

import unittest

import numpy as np
import torch
from torch import nn

from reference.judge import conditioning
from reference.judge.compare import NonFiniteOutput
from reference.kit.components import COMPONENTS, contract_class
from reference.oracles.numpy_ref import CONTRACT_EPS, join

__all__ = ["CONTRACT_EPS", "contract_weights", "extract_weights", "to_numpy"]


def to_numpy(x: torch.Tensor | None) -> np.ndarray | None:
    """A detached CPU NumPy copy of ``x`` (floating tensors become float64; bool/int keep their dtype).

    Inside ``reference.judge.conditioning.perturbation`` floating copies come back perturbed by one rounding: every input
    and weight the oracle reads passes here, which is how the oracle's sensitivity is measured."""
    if x is None:
        return None
    x = x.detach().cpu()
    return conditioning.perturb((x.to(torch.float64) if x.is_floating_point() else x).numpy().copy())


class MissingParameter(unittest.SkipTest):
    """The oracle needs a contract parameter the implementation does not hold (``FeedForwardBlock`` without
    ``linear_1.bias``): the comparison is not reached, and the ``api.attributes`` clause's own test fails
    (``tests/test_contract.py``); never a crash of the oracle counted as a verdict of another clause."""


class Weights(dict):
    """``extract_weights``' result: a missing name raises :class:`MissingParameter` naming it, not a ``KeyError``
    from inside an oracle (``.get`` still returns None for the optional ones)."""

    def __missing__(self, name: str) -> np.ndarray:
        raise MissingParameter(f"not reached because of api.attributes: the module holds no parameter {name!r} "
                               f"(it holds {sorted(self)})")


def extract_weights(module: nn.Module) -> Weights:
    """Every parameter of ``module`` by its dotted ``named_parameters()`` name, as a float64 NumPy array (the
    attention projections' biases included when the module has them). A NaN/inf parameter is the implementation's
    (:class:`NonFiniteOutput` naming it): an oracle fed it would be a non-finite reference."""
    weights = Weights((name, to_numpy(p)) for name, p in module.named_parameters())
    for name, value in weights.items():
        if value is not None and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise NonFiniteOutput(f"{type(module).__name__}: the implementation's parameter {name!r} is non-finite "
                                  f"({int((~np.isfinite(value)).sum())} of {value.size} elements): a finding of the "
                                  "implementation, not of the reference")
    return weights


#: The parameters the contract gives each leaf component (``named_parameters()`` names relative to it), and those
#: it may have or not (absent = zero: the attention projections' biases), from the registry.
CONTRACT_PARAMETERS = {c.contract: c.parameters for c in COMPONENTS.values() if c.parameters}
OPTIONAL_PARAMETERS = {c.contract: c.optional_parameters for c in COMPONENTS.values() if c.optional_parameters}


def contract_weights(model: nn.Module) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The model's float64 weights for the oracle, and a note per submodule path that breaks the parameter contract.

    A missing bias (``X.bias`` next to ``X.weight``) or norm gain/shift is filled with the value it stands for
    (zeros / ones) so the oracle can still run everything downstream; the submodule itself is flagged. Parameters
    beyond the contract are named in the note too (the oracle ignores them). Optional parameters
    (``OPTIONAL_PARAMETERS``: the attention projections' biases) are used when present and never flagged.
    """
    weights = extract_weights(model)
    notes: dict[str, str] = {}
    for path, module in model.named_modules():
        names = CONTRACT_PARAMETERS.get(contract_class(module))
        if names is None:
            continue
        own = {name for name, _ in module.named_parameters()}
        lacking = [n for n in names if n not in own]
        extra = sorted(own - set(names) - set(OPTIONAL_PARAMETERS.get(contract_class(module), ())))
        for name in lacking:
            key = join(path, name)
            if name.endswith("bias") and join(path, name[: -len("bias")] + "weight") in weights:
                weights[key] = np.zeros(weights[join(path, name[: -len("bias")] + "weight")].shape[0])
            elif name in ("alpha", "bias") and join(path, "bias" if name == "alpha" else "alpha") in weights:
                other = weights[join(path, "bias" if name == "alpha" else "alpha")]
                weights[key] = np.ones_like(other) if name == "alpha" else np.zeros_like(other)
        text = []
        if lacking:
            text.append(f"lacks contract parameter(s) {', '.join(lacking)} (the oracle uses the neutral value)")
        if extra:
            text.append(f"has parameters beyond the contract: {', '.join(extra)} (the oracle ignores them)")
        if text:
            notes[path] = "; ".join(text)
    return weights, notes
