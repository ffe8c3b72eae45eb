"""Only the blog's API: no ``device=``/``dtype=`` keywords (``build_transformer`` included), no mask helpers,
no ``Transformer.forward``. The suite builds it under ``torch.set_default_dtype`` and moves it with ``.to``."""

from tests.conformance.blog_api import BLOG_CLASSES, strip_to_blog_api
from tests.negative_controls._base import install

VARIANT = "the blog-only API: no device=/dtype= keywords anywhere, no causal_mask/padding_mask, no Transformer.forward"
COMPONENT = "API"

install(globals(), [
    ("model.py", "                      *, device=None, dtype=None) -> Transformer:", "                      ) -> Transformer:"),
    ("model.py", '    kw = {"device": device, "dtype": dtype}', "    kw = {}"),
    # blocks build their norms and residuals as the blog does, with no factory keywords
    ("model.py", "LayerNormalization(features, device=device, dtype=dtype)", "LayerNormalization(features)", 3),
    ("model.py", "ResidualConnection(features, dropout, device=device, dtype=dtype)",
     "ResidualConnection(features, dropout)", 2),
])


strip_to_blog_api(globals(), BLOG_CLASSES)
