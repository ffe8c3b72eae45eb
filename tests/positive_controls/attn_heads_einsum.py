"""Heads split with ``einsum`` over the reshaped projection weights, merged with ``permute``/``reshape``."""

import torch

from tests.negative_controls._base import Line, install

VARIANT = "heads split by einsum('bld,hkd->bhlk') on the reshaped W_q/W_k/W_v, merged with permute + reshape"
COMPONENT = "attention"


def _split(linear, x, h, d_k):
    weight = linear.weight.view(h, d_k, -1)  # (h, d_k, d): rows of W grouped per head
    return torch.einsum("bld,hkd->bhlk", x, weight)


install(globals(), [
    ("model.py", Line("query = self.w_q(q).view("), "query = _split(self.w_q, q, self.h, self.d_k)"),
    ("model.py", Line("key = self.w_k(k).view("), "key = _split(self.w_k, k, self.h, self.d_k)"),
    ("model.py", Line("value = self.w_v(v).view("), "value = _split(self.w_v, v, self.h, self.d_k)"),
    ("model.py", Line("x = x.transpose(1, 2).contiguous().view(batch, len_q, self.d_model)"),
     "x = x.permute(0, 2, 1, 3).reshape(batch, len_q, self.d_model)"),
])
