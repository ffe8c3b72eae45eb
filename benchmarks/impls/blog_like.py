"""The walkthrough's three numerical choices at once, as a learner's copy of the blog has them.

LayerNorm ``(x - mean) / (std + eps)`` with the unbiased std, the positional table computed in float32, and
attention in the input dtype with masked scores filled with ``-1e9``: the combination of the negative controls
``layernorm_blog``, ``pe_float32_table`` and ``attn_fill_minus_1e9``, built from the same correct base. It fails
many tests at once, which is what `benchmarks.failing_runs` times: a run on a broken model must not take much
longer than a green one.
"""
from tests.negative_controls import attn_fill_minus_1e9, layernorm_blog, pe_float32_table
from tests.negative_controls._base import install

BUG = "the blog's LayerNorm, float32 positional table and -1e9 fill, together"
COMPONENT = "layer norm, positional table, numerical stability"
install(globals(), [*layernorm_blog.PATCHES, *pe_float32_table.PATCHES, *attn_fill_minus_1e9.PATCHES])
