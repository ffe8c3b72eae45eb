"""Pe is a non-persistent buffer: missing from state_dict."""

from tests.negative_controls._base import install

BUG = "pe is a non-persistent buffer: missing from state_dict"
COMPONENT = "positional table"
CLAUSES = ("pe.buffer", "module.state")

install(globals(), [
    ("model.py", "persistent=True", "persistent=False"),
])
