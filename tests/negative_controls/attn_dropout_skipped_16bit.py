"""float16/bfloat16 attention, computed in float32 and cast back, forgets to apply attention dropout on the way."""

from tests.negative_controls._base import install

BUG = "float16/bfloat16 attention (computed in float32 and cast back) skips attention dropout"
COMPONENT = "dropout"
CLAUSES = ("numerics.16bit-semantics",)

install(globals(), [
    ("model.py", "query.float(), key.float(), value.float(), mask, dropout)",
     "query.float(), key.float(), value.float(), mask, None)  # the upcast path drops no weights"),
])
