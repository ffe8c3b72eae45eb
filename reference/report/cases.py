"""The report's configurations, the context a component run gets, and the outcome it returns.

Every random part of a run (weights, inputs, masks, cotangents) comes from the run's seed (``case_seed``: the global
``--seed``, the component and the configuration), through ``masks.make_mask`` / ``masks.random_case``, the one
seeded generator the localiser shares. Shapes: B batch, L / Lq / Lk lengths, d = d_model.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from reference.kit import components
from reference.oracles import masks
from reference.judge.compare import Verdict
from reference.spec.contract import ModelConfig, build_model, randomize_parameters_

if TYPE_CHECKING:
    from reference.report.localize import Localization

#: Every module is built with the blog's default dropout and run in eval mode, where dropout must be the identity.
DROPOUT = 0.1
#: Input scale of ``multi_head_attention/large``: scores reach the hundreds, past float32's exp range (88.7), so a
#: softmax without the max subtraction overflows; larger scales make near-tied scores' rounding (eps * |score|)
#: dominate the output and the error ratio a lottery (at 30x, seeds gave impl/torch from 0.08 to 15 with torch's own
#: paths 10x apart).
LARGE = 6.0


@dataclass(frozen=True)
class Config:
    """One size of the sweep: the model sizes, a batch, and source/target lengths (Lq != Lk for cross)."""

    name: str
    model: ModelConfig
    batch: int
    src_len: int
    tgt_len: int

    def text(self) -> str:
        m = self.model
        return (f"{self.name}: d={m.d_model} h={m.h} d_ff={m.d_ff} N={m.N} B={self.batch} "
                f"Ls={self.src_len} Lt={self.tgt_len}")


CONFIGS: tuple[Config, ...] = (
    Config("c0", ModelConfig(src_vocab_size=11, tgt_vocab_size=13, src_seq_len=8, tgt_seq_len=8, d_model=16, N=2,
                             h=2, dropout=DROPOUT, d_ff=32), batch=2, src_len=7, tgt_len=6),
    Config("c1", ModelConfig(src_vocab_size=17, tgt_vocab_size=9, src_seq_len=10, tgt_seq_len=10, d_model=24, N=1,
                             h=4, dropout=DROPOUT, d_ff=48), batch=3, src_len=5, tgt_len=9),
    Config("c2", ModelConfig(src_vocab_size=7, tgt_vocab_size=7, src_seq_len=4, tgt_seq_len=4, d_model=15, N=1,
                             h=3, dropout=DROPOUT, d_ff=20), batch=1, src_len=4, tgt_len=3),  # odd d_model
)


def case_seed(seed: int, component: str, config: Config) -> int:
    """A reproducible per-run seed from the global ``--seed``, the component and the config."""
    return (seed * 1_000_003 + zlib.crc32(f"{component}/{config.name}".encode())) % (2**31)


@dataclass
class Outcome:
    """What one component run measured: the verdict, a one-line detail, arrays for the plots."""

    verdict: Verdict
    detail: str = ""
    actual: np.ndarray | None = field(default=None, repr=False)  # [B, L, d]-like, for the error heatmap
    expected: np.ndarray | None = field(default=None, repr=False)
    localization: Localization | None = None
    passed: bool | None = None  # overrides verdict.ok (the full model also needs its localisation clean)
    skipped: bool = False  # an extra the implementation lacks (the detail names it); counts as passed

    @property
    def ok(self) -> bool:
        return self.verdict.ok if self.passed is None else self.passed


def skip(reason: str) -> Outcome:
    """The outcome of a run the implementation cannot take (an extra it lacks)."""
    return Outcome(Verdict(max_abs=0.0, max_rel=0.0, rule="skip", tolerance="-", allowed=0.0, margin=0.0, ok=True,
                           note=reason), reason, skipped=True)


@dataclass
class Ctx:
    """Everything a component run needs."""

    impl: ModuleType
    config: Config
    device: str
    dtype: torch.dtype
    seed: int  # per (component, config)
    rng: np.random.Generator

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """A float array rounded to the run's dtype, on its device."""
        return torch.from_numpy(np.asarray(array, dtype=np.float64)).to(device=self.device, dtype=self.dtype)

    def normal(self, *shape: int) -> torch.Tensor:
        return self.tensor(self.rng.standard_normal(shape))

    def build(self, name: str) -> nn.Module:
        """Registry component ``name`` at this config's sizes, every parameter random (this run's seed), in eval."""
        module = components.build(self.impl, name, self.config.model, device=self.device, dtype=self.dtype)
        randomize_parameters_(module, self.seed)
        return module.eval()

    def model(self) -> nn.Module:
        """The full model at this config, every parameter random (this run's seed), in eval."""
        model = build_model(self.impl, self.config.model, device=self.device, dtype=self.dtype)
        randomize_parameters_(model, self.seed)
        return model.eval()

    def mask(self, kind: str, Lq: int, Lk: int) -> torch.Tensor | None:
        """A contract mask of ``kind`` (``masks.make_mask``) from this run's generator, on its device."""
        m = masks.make_mask(kind, self.rng, batch=self.config.batch, heads=self.config.model.h, len_q=Lq, len_k=Lk)
        return None if m is None else torch.from_numpy(np.ascontiguousarray(m)).to(self.device)

    def case(self) -> masks.Case:
        """Tokens and masks of one full-model run at this config (``masks.random_case``, this run's seed)."""
        return masks.random_case(self.config.model, batch=self.config.batch, src_len=self.config.src_len,
                                 tgt_len=self.config.tgt_len, seed=self.seed, device=self.device)
