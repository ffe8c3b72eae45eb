"""LayerNormalization through ``F.layer_norm`` (PyTorch's own kernel, in the input's dtype)."""

import torch.nn.functional as F

from tests.negative_controls._base import install

VARIANT = "LayerNormalization via F.layer_norm(x, (features,), alpha, bias, eps)"
COMPONENT = "layer norm"


def _layer_norm(module, x):
    return F.layer_norm(x, (module.features,), module.alpha, module.bias, module.eps)


install(globals(), [
    ("model.py", "        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x\n",
     "        return _layer_norm(self, x)\n"),
])
