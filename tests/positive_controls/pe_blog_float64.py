"""The blog's ``div_term = exp(arange(0, d, 2) * -log(10000) / d)`` table, in float64, cast once, never rebuilt."""

import math

import torch

from tests.negative_controls._base import Line, install

VARIANT = ("the blog's exp(arange(0, d, 2) * -log(10000)/d) table computed in float64 and cast once; .to()/.double() "
           "cast the buffer (no rebuild)")
COMPONENT = "positional encoding"


def _blog_table(seq_len, d_model):
    position = torch.arange(0, seq_len, dtype=torch.float64).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(seq_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term[: d_model // 2])
    return pe


install(globals(), [
    ("model.py", Line("return sinusoid_table(self.seq_len, self.d_model)"),
     "return _blog_table(self.seq_len, self.d_model).unsqueeze(0).to(device=device, dtype=dtype)  # (1, L, d)"),
    ("model.py", "if self.pe.dtype != old.dtype or self.pe.device != old.device:", "if False:  # a plain buffer cast"),
])
