"""Fault: the module calls ``torch.set_default_dtype(torch.float64)`` at import: every tensor its importer creates
afterwards without a dtype is float64."""

import torch

from tests.negative_controls._base import install

torch.set_default_dtype(torch.float64)
install(globals())
