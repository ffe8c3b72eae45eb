"""Hooks on a model's contract submodules: every call's inputs and output, in execution order.

``record_calls(model, run)`` registers a pre- and a post-forward hook on every submodule whose contract class
(``contract_class``: its class's name, or the contract's for a class seen through an ``--impl-map``) is a contract
component (``CONTRACT_CLASSES``, from the registry; the root ``Transformer`` is driven, not hooked), runs ``run()``
and returns the calls, each under the dotted path ``named_modules`` gives it. A call that raised is recorded with
the exception's text and the contract submodules running around it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from reference.kit.adapter import contract_inputs
from reference.kit.components import COMPONENTS, contract_class

#: Class names of the contract's submodules (the root ``Transformer`` is driven, not hooked).
CONTRACT_CLASSES = frozenset(c.contract for c in COMPONENTS.values()
                             if c.is_class and c.probe_path)


@dataclass
class Call:
    """One call of a contract submodule: its inputs (in ``forward``'s parameter order) and its output."""

    order: int  # completion order, 0-based
    path: str
    kind: str  # class name
    module: nn.Module = field(repr=False)
    inputs: tuple = field(repr=False)
    output: Any = field(repr=False)
    attention: torch.Tensor | None = field(default=None, repr=False)  # attention_scores after the call
    error: str = ""  # "ValueError: ..." when the call raised (then ``output`` is None)
    enclosing: tuple[str, ...] = ()  # when it raised: the contract submodules running around it, innermost first


def _bind(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
    try:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments.values())
    except (TypeError, ValueError):
        return tuple(args) + tuple(kwargs.values())


def _detach(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, tuple):
        return tuple(_detach(v) for v in x)
    return x


def record_calls(model: nn.Module, run: Callable[[], Any]) -> tuple[Any, list[Call]]:
    """Run ``run()`` with hooks on every contract submodule of ``model``; return its result and the calls made.

    If ``run()`` raises, the result is None and the last call is the innermost submodule that was running, with
    its inputs and the exception's text in ``error``.
    """
    calls: list[Call] = []
    running: list[tuple[str, tuple]] = []  # (path, inputs) of the submodules entered and not yet left

    def enter(path: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        running.append((path, _detach(contract_inputs(module, _bind(module, args, kwargs)))))

    def leave(path: str, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        inputs = running.pop()[1] if running and running[-1][0] == path else _detach(_bind(module, args, kwargs))
        scores = getattr(module, "attention_scores", None)
        calls.append(Call(len(calls), path, contract_class(module), module, inputs, _detach(output),
                          scores.detach().clone() if isinstance(scores, torch.Tensor) else None))

    modules = dict(model.named_modules())
    handles = []
    for path, m in modules.items():
        if path and contract_class(m) in CONTRACT_CLASSES:
            handles.append(m.register_forward_pre_hook(lambda mod, a, kw, _p=path: enter(_p, mod, a, kw),
                                                       with_kwargs=True))
            handles.append(m.register_forward_hook(lambda mod, a, kw, out, _p=path: leave(_p, mod, a, kw, out),
                                                   with_kwargs=True))
    result = None
    try:
        result = run()
    except Exception as exc:  # the innermost running submodule raised: record it as the last call
        if not running:
            raise
        path, inputs = running[-1]
        calls.append(Call(len(calls), path, contract_class(modules[path]), modules[path], inputs, None,
                          error=f"{type(exc).__name__}: {exc}",
                          enclosing=tuple(p for p, _ in reversed(running[:-1]))))
    finally:
        for handle in handles:
            handle.remove()
    return result, calls


def main_output(output: Any) -> Any:
    """The tensor a submodule returned (the first one if it returned a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) and output else output
