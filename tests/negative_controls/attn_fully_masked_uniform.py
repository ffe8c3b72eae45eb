"""(blog) a fully masked query row gets uniform weights over masked keys instead of zeros."""

from tests.negative_controls._base import install

BUG = "(blog) a fully masked query row gets uniform weights over masked keys instead of zeros"
COMPONENT = "attention masking"

install(globals(), [
    ("model.py", "weights = (scores + bias).softmax(dim=-1) * seen", "weights = (scores + bias).softmax(dim=-1)"),
])
