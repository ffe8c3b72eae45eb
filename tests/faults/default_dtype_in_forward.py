"""Fault: ``LayerNormalization.forward`` sets ``torch.set_default_dtype(torch.float64)`` on every call (not at
import): every tensor the caller creates afterwards is float64. The outputs are the correct model's."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", 'check_features("x", x, self.features)\n        xf = x.float()',
     'check_features("x", x, self.features)\n        torch.set_default_dtype(torch.float64)\n        xf = x.float()'),
])
