"""16-bit arithmetic throughout: attention and LayerNorm compute in the input dtype, with no float32 upcast.

The way almost every from-scratch model is written (the walkthrough, textbook code, learners' files): exact in
float32/float64, and in float16/bfloat16 a model with 16-bit arithmetic and no float32 accumulation. It breaks no
formula, masking or behaviour clause; it fails only 16-bit numerics clauses (``numerics.16bit-accuracy``: 16-bit
softmax and variance errors past K times torch's, ``numerics.16bit-range``: a float16 variance that overflows past
|x| ~ 256). Unlike the other positive controls it is not expected to pass everything: the kill matrix records it
apart and checks that every failure is one of ``EXPECTED_FAIL_CLAUSES``, and that with ``--dtypes float32,float64``
nothing fails (``tests/positive_controls/expected/arith_16bit.json`` is its expected smoke card).
"""

from tests.negative_controls._base import install

VARIANT = ("16-bit arithmetic throughout: attention and LayerNorm in the input dtype (no float32 upcast); exact in "
           "float32/float64")
COMPONENT = "numerics (16-bit arithmetic)"
#: The only clauses this control may fail: a 16-bit numerics finding, never a formula, masking or behaviour one.
EXPECTED_FAIL_CLAUSES = ("numerics.16bit-accuracy", "numerics.16bit-range")

install(globals(), [
    ("model.py", "if query.dtype in (torch.float16, torch.bfloat16):", "if False:  # attend in the input dtype"),
    ("model.py", "xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x", "xf = x"),
    # means as written from scratch: .mean() (the base's sum / d is the same in float32, but a float16 sum
    # rounds twice, and overflows first)
    ("model.py", ".sum(dim=-1, keepdim=True) / d", ".mean(dim=-1, keepdim=True)", 3),
])
