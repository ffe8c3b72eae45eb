"""The model sizes the benchmark times: the issue's small config and the paper's base model."""

from __future__ import annotations

from dataclasses import dataclass

from reference.spec.contract import ModelConfig


@dataclass(frozen=True)
class BenchConfig:
    """Encoder-decoder sizes and the batch: B sequences of L source and L target tokens."""

    name: str
    d_model: int
    N: int
    h: int
    d_ff: int
    L: int
    B: int

    @property
    def tokens(self) -> int:
        """Tokens one step processes: B * (L source + L target)."""
        return self.B * 2 * self.L

    def model_config(self) -> ModelConfig:
        """The ``build_transformer`` arguments (dropout p = 0; the vocabularies are unused by the timed core)."""
        return ModelConfig(src_vocab_size=64, tgt_vocab_size=64, src_seq_len=self.L, tgt_seq_len=self.L,
                           d_model=self.d_model, N=self.N, h=self.h, dropout=0.0, d_ff=self.d_ff)

    def label(self) -> str:
        return f"d={self.d_model} N={self.N} h={self.h} d_ff={self.d_ff} L={self.L} B={self.B}"


SMALL = BenchConfig("small", d_model=128, N=2, h=4, d_ff=512, L=64, B=16)
BASE = BenchConfig("base", d_model=512, N=6, h=8, d_ff=2048, L=128, B=8)
CONFIGS = {"small": SMALL, "base": BASE}
