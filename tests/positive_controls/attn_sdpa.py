"""Attention output from PyTorch's fused ``F.scaled_dot_product_attention`` (16-bit inputs passed as they are)."""

import torch
import torch.nn.functional as F

from tests.negative_controls._base import install

VARIANT = "attention output from F.scaled_dot_product_attention; weights for attention_scores from a -inf softmax"
COMPONENT = "attention"


def _attention(query, key, value, mask, dropout):
    if dropout is not None and dropout.training and dropout.p > 0:
        return None  # dropout on the weights: keep the explicit path, so attention_scores shows what was dropped
    bool_mask = None if mask is None else (mask != 0)
    while bool_mask is not None and bool_mask.dim() < 4:  # SDPA rejects a 1-D [Lk] mask (the contract takes it);
        bool_mask = bool_mask.unsqueeze(0)                # a 3-D one is [1, Lq, Lk], so this is the heads axis
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=bool_mask)
    work = torch.promote_types(query.dtype, torch.float32)  # 16-bit weights computed in float32
    scores = (query.to(work) @ key.to(work).transpose(-2, -1)) / query.shape[-1] ** 0.5
    if bool_mask is not None:
        scores = scores.masked_fill(~bool_mask, float("-inf"))
    weights = torch.nan_to_num(scores.softmax(dim=-1), nan=0.0).to(query.dtype)
    return out, weights


install(globals(), [
    ("model.py", "        if query.dtype in (torch.float16, torch.bfloat16):\n",
     "        fused = _attention(query, key, value, mask, dropout)\n        if fused is not None:\n"
     "            return fused\n        if query.dtype in (torch.float16, torch.bfloat16):\n"),
])
