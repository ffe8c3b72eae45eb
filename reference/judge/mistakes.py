"""Naming a known mistake: when a component fails its oracle, whether it matches a known-wrong formula instead
(``reference.oracles.mistakes``: no 1/sqrt(d_k), a softmax over the queries, the unbiased variance, ...), so the
root FAIL's message says "behaves like <the mistake>" the way the precision diagnosis names a 16-bit problem.

A name is given only when the implementation's output matches the wrong formula by the direct rule at the dtype's
own value tolerance (``reference.judge.tolerances``) on every compared element, after the comparison with the right
formula failed: a correct implementation never fails first, so it never gets a name.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import torch

from reference.judge.compare import ArrayLike, NonFiniteReference, WrongOutput, judge, to_f64

#: The phrase that introduces a named mistake in a message (the kill matrix and the card read it).
BEHAVES_LIKE = "behaves like"


def behaves_like(actual: ArrayLike, candidates: Mapping[str, Callable[[], ArrayLike]], *, dtype: torch.dtype,
                 where: ArrayLike | None = None) -> str | None:
    """The first mistake in ``candidates`` (name -> its wrong formula's output, computed lazily from the same inputs
    and weights) that ``actual`` matches within ``dtype``'s value tolerance, non-finite exactly where the wrong formula
    is (and finite somewhere); None when none does."""
    a = to_f64(actual)
    finite = torch.isfinite(a)
    for name, wrong in candidates.items():
        try:
            e = to_f64(wrong())
        except Exception:  # noqa: BLE001 - a variant that does not apply to these inputs names nothing
            continue
        # NaN/inf where the wrong formula has them too (an unbiased variance at d = 1): matched by position
        if e.shape != a.shape or not bool((torch.isfinite(e) == finite).all()) or not bool(finite.any()):
            continue
        keep = finite if where is None else finite & torch.as_tensor(where, dtype=torch.bool).expand_as(finite)
        if judge(torch.where(finite, a, 0.0), torch.where(finite, e, 0.0), dtype=dtype, rule="direct",
                 where=keep).ok:
            return name
    return None


@contextmanager
def naming(actual: ArrayLike, candidates: Mapping[str, Callable[[], ArrayLike]] | None, *, dtype: torch.dtype,
           where: ArrayLike | None = None) -> Iterator[None]:
    """Run a comparison of ``actual`` with the right formula; if it fails by an assertion and ``actual`` matches a
    known mistake, re-raise with ``"behaves like <mistake>: "`` before the message (a shape or non-finite-reference
    failure is left as it is)."""
    __tracebackhide__ = True
    try:
        yield
    except (NonFiniteReference, WrongOutput):
        raise
    except AssertionError as exc:
        name = behaves_like(actual, candidates, dtype=dtype, where=where) if candidates else None
        if name is None:
            raise
        raise AssertionError(f"{BEHAVES_LIKE} {name}: {exc}") from exc
