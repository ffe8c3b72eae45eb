"""float16/bfloat16 attention keeps its weights (``attention_scores``) in float32 instead of the input dtype."""

from tests.negative_controls._base import install

BUG = "float16/bfloat16 attention keeps attention_scores in float32 (a second [B, h, Lq, Lk] buffer at twice the size)"
COMPONENT = "dtype/device handling"
CLAUSES = ("strict.dtype-kept",)
TIER = "strict"  # the contract does not fix the weights' dtype: the strict clause strict.dtype-kept does

install(globals(), [
    ("model.py", "return out.to(query.dtype), weights.to(query.dtype)", "return out.to(query.dtype), weights"),
])
