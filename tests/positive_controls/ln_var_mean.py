"""LayerNorm statistics from ``torch.var_mean(unbiased=False)`` (Welford-style kernel)."""

from tests.negative_controls._base import install

VARIANT = "LayerNorm statistics from torch.var_mean(x, dim=-1, unbiased=False)"
COMPONENT = "layer norm"

install(globals(), [
    ("model.py", "        mean = xf.sum(dim=-1, keepdim=True) / d  # (..., 1)\n",
     "        var, mean = torch.var_mean(xf, dim=-1, unbiased=False, keepdim=True)\n"),
    ("model.py", "        centred = centred - centred.sum(dim=-1, keepdim=True) / d\n", ""),
    ("model.py", "        var = (centred * centred).sum(dim=-1, keepdim=True) / d", "        pass"),
])
