"""A textbook two-pass LayerNorm: mean, then the mean of squared deviations, then divide by sqrt(var + eps)."""

from tests.negative_controls._base import install

VARIANT = "textbook two-pass LayerNorm: ((x - mean)**2).mean(), (x - mean) / sqrt(var + eps) (no re-centring)"
COMPONENT = "layer norm"

install(globals(), [
    ("model.py", "        centred = centred - centred.sum(dim=-1, keepdim=True) / d\n", ""),
    ("model.py", "        var = (centred * centred).sum(dim=-1, keepdim=True) / d",
     "        var = ((xf - mean) ** 2).mean(dim=-1, keepdim=True)"),
    ("model.py", "        normed = centred * torch.rsqrt(var + self.eps)",
     "        normed = (xf - mean) / torch.sqrt(var + self.eps)"),
])
