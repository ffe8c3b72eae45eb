"""Fault: ``pe`` is a plain tensor attribute, not a registered buffer: missing from ``state_dict`` and
``buffers()``, and left behind by ``.to()``/``.double()``."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", 'self.register_buffer("pe", self._table(device, dtype), persistent=True)',
     "self.pe = self._table(device, dtype)"),
])
