"""Fault: the module calls ``torch.set_grad_enabled(False)`` at import: autograd is off in its importer's thread."""

import torch

from tests.negative_controls._base import install

torch.set_grad_enabled(False)
install(globals())
