"""(blog) attention in the input dtype with masked scores filled with -1e9: overflows float16 (RuntimeError)."""

from tests.negative_controls._base import install

BUG = "(blog) attention in the input dtype with masked scores filled with -1e9: overflows float16 (RuntimeError)"
COMPONENT = "numerical stability"
CLAUSES = ("numerics.16bit-range", "numerics.16bit-semantics")

install(globals(), [
    ("model.py", "if query.dtype in (torch.float16, torch.bfloat16):", "if False:  # attend in the input dtype"),
    ("model.py", "torch.finfo(scores.dtype).min", "-1e9"),
])
