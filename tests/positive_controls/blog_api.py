"""Only the blog's API: no ``device=``/``dtype=`` keywords (``build_transformer`` included), no mask helpers,
no ``Transformer.forward``. The suite builds it under ``torch.set_default_dtype`` and moves it with ``.to``."""

import inspect as _inspect

from torch import nn as _nn

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


def _blog_signature(cls):
    """Subclass ``cls`` whose constructor takes no device=/dtype= keywords, as the blog's classes."""
    class Blog(cls):
        def __init__(self, *args):
            super().__init__(*args)
    Blog.__name__ = Blog.__qualname__ = cls.__name__
    Blog.__init__.__signature__ = _inspect.Signature(
        [p for p in _inspect.signature(cls.__init__).parameters.values() if p.kind is not p.KEYWORD_ONLY])
    return Blog


for _name in ("InputEmbeddings", "PositionalEncoding", "LayerNormalization", "FeedForwardBlock",
              "MultiHeadAttentionBlock", "ResidualConnection", "EncoderBlock", "Encoder", "DecoderBlock", "Decoder",
              "ProjectionLayer", "Transformer"):
    globals()[_name] = _blog_signature(globals()[_name])
Transformer.forward = _nn.Module.forward
del causal_mask, padding_mask
