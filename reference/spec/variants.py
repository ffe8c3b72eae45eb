"""The declared variants of the contract: which residual layout the kit judges an implementation against.

* ``pre-norm`` (the default, the blog's): ``ResidualConnection(x, sublayer) = x + dropout(sublayer(norm(x)))``
  (``nn.TransformerEncoderLayer(norm_first=True)``), judged under the clause ``residual.pre-norm``.
* ``post-norm`` (the paper's, ``nn.Transformer``'s default ``norm_first=False``):
  ``ResidualConnection(x, sublayer) = norm(x + dropout(sublayer(x)))``, judged under ``residual.post-norm``.

Only ``ResidualConnection``'s formula changes: the contract's classes and attributes stay (``ResidualConnection``
holds ``norm``; ``Encoder``/``Decoder`` keep their final ``norm`` after the last layer, as ``nn.Transformer``'s
``encoder_norm``/``decoder_norm`` stay under ``norm_first=False``).

The run's variant is a process-wide setting, like ``reference.spec.contract.use_compile``: ``pytest --variant``,
``python -m reference.report --variant`` or the environment (``SCRATCH_TRANSFORMER_VARIANT=post-norm``) set it with
``use_variant``; the oracles (``numpy_ref``, ``torch_ref``), the torch adapters and the clause filter read it through
``resolve(None)`` wherever a caller passes no variant of its own. This module imports neither torch nor the
implementation (``numpy_ref`` reads it).
"""

from __future__ import annotations

import os

PRE_NORM, POST_NORM = "pre-norm", "post-norm"
#: The variants, the default first.
VARIANTS = (PRE_NORM, POST_NORM)
DEFAULT_VARIANT = PRE_NORM
#: The clause that judges ``ResidualConnection`` under each variant; a run judges its own and leaves the others
#: "not run".
RESIDUAL_CLAUSES = {PRE_NORM: "residual.pre-norm", POST_NORM: "residual.post-norm"}
#: Environment variable naming the variant (``pytest --variant`` and ``report --variant`` default to it).
VARIANT_ENV = "SCRATCH_TRANSFORMER_VARIANT"


def check(name: str) -> str:
    """``name`` when it is a variant, else ``ValueError`` naming the choices."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}: choose one of {', '.join(VARIANTS)}")
    return name


_VARIANT: dict[str, str] = {"name": check(os.environ.get(VARIANT_ENV) or DEFAULT_VARIANT)}


def variant() -> str:
    """The run's declared variant (``DEFAULT_VARIANT`` unless ``use_variant`` or the environment said otherwise)."""
    return _VARIANT["name"]


def use_variant(name: str | None) -> None:
    """Judge every implementation from now on as the variant ``name`` (None: the default, pre-norm)."""
    _VARIANT["name"] = check(name or DEFAULT_VARIANT)


def resolve(name: str | None) -> str:
    """``name`` (checked), or the run's declared variant when None: the oracles' and adapters' default."""
    return variant() if name is None else check(name)


def residual_clause(name: str | None = None) -> str:
    """The clause judging ``ResidualConnection`` under ``name`` (None: the run's variant)."""
    return RESIDUAL_CLAUSES[resolve(name)]


def in_variant(clause_ids: "tuple[str, ...] | list[str]", name: str | None = None) -> tuple[str, ...]:
    """``clause_ids`` without the residual clauses of the other variants (a test or report row that judges the
    residual names every variant's clause; a run counts it for its own only)."""
    others = set(RESIDUAL_CLAUSES.values()) - {residual_clause(name)}
    return tuple(c for c in clause_ids if c not in others)
