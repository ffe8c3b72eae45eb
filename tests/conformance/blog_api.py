"""Write a contract implementation with only the blog's API into a directory, under a new package name.

``write_blog_api_impl(dir, name)`` copies a correct implementation's source to ``dir/name/`` (so it lives
elsewhere, imported from ``PYTHONPATH``), then strips the extras this project adds: the constructors lose their
``device=``/``dtype=`` keywords, ``build_transformer`` is the blog's (positional calls, no keywords),
``causal_mask``/``padding_mask`` are gone and ``Transformer`` has no ``forward``.
The suite must still judge its numbers, skipping (with a reason naming the part) what needs an extra.
"""

from __future__ import annotations

import importlib.util
import inspect as _inspect
import shutil
from pathlib import Path

from torch import nn as _nn

#: The contract classes whose constructors lose the keywords (all of them).
BLOG_CLASSES = ("InputEmbeddings", "PositionalEncoding", "LayerNormalization", "FeedForwardBlock",
                "MultiHeadAttentionBlock", "ResidualConnection", "EncoderBlock", "Encoder", "DecoderBlock", "Decoder",
                "ProjectionLayer", "Transformer")


# The two functions below run here (``tests.positive_controls.blog_api`` calls ``strip_to_blog_api``) and, as
# source, in the copy ``write_blog_api_impl`` writes (which must not import this kit): they use only ``_inspect``,
# ``_nn``, builtins and each other (the copy evaluates annotations: no ``from __future__ import annotations`` there).
def blog_signature(cls: type, module: str) -> type:
    """Subclass ``cls`` whose constructor refuses device=/dtype= keywords, as the blog's classes do, defined (for
    its name and repr) in ``module``."""
    class Blog(cls):
        def __init__(self, *args):
            super().__init__(*args)
    Blog.__name__ = Blog.__qualname__ = cls.__name__
    Blog.__module__ = module
    Blog.__init__.__signature__ = _inspect.Signature(
        [p for p in _inspect.signature(cls.__init__).parameters.values() if p.kind is not p.KEYWORD_ONLY])
    return Blog


def strip_to_blog_api(namespace: dict, names: tuple) -> None:
    """In a contract module's ``namespace``: the classes ``names`` without device=/dtype= keywords, a
    ``Transformer`` with encode/decode/project only (no ``forward``), no ``causal_mask``/``padding_mask``."""
    for name in names:
        namespace[name] = blog_signature(namespace[name], namespace["__name__"])
    namespace["Transformer"].forward = _nn.Module.forward  # the blog's Transformer has encode/decode/project only
    del namespace["causal_mask"], namespace["padding_mask"]


_STRIP = f'''
import inspect as _inspect

from torch import nn as _nn


{_inspect.getsource(blog_signature)}

{_inspect.getsource(strip_to_blog_api)}

strip_to_blog_api(globals(), {BLOG_CLASSES!r})
del blog_signature, strip_to_blog_api


def build_transformer(src_vocab_size, tgt_vocab_size, src_seq_len, tgt_seq_len, d_model=512, N=6, h=8,
                      dropout=0.1, d_ff=2048):
    """The blog's builder: positional constructor calls, no device=/dtype= keywords, Xavier on every matrix."""
    src_embed, tgt_embed = InputEmbeddings(d_model, src_vocab_size), InputEmbeddings(d_model, tgt_vocab_size)
    src_pos = PositionalEncoding(d_model, src_seq_len, dropout)
    tgt_pos = PositionalEncoding(d_model, tgt_seq_len, dropout)
    encoder = Encoder(d_model, _nn.ModuleList([
        EncoderBlock(d_model, MultiHeadAttentionBlock(d_model, h, dropout), FeedForwardBlock(d_model, d_ff, dropout),
                     dropout) for _ in range(N)]))
    decoder = Decoder(d_model, _nn.ModuleList([
        DecoderBlock(d_model, MultiHeadAttentionBlock(d_model, h, dropout), MultiHeadAttentionBlock(d_model, h, dropout),
                     FeedForwardBlock(d_model, d_ff, dropout), dropout) for _ in range(N)]))
    transformer = Transformer(encoder, decoder, src_embed, tgt_embed, src_pos, tgt_pos,
                              ProjectionLayer(d_model, tgt_vocab_size))
    for p in transformer.parameters():
        if p.dim() > 1:
            _nn.init.xavier_uniform_(p)
    return transformer
'''


def write_blog_api_impl(directory: Path, name: str, source_package: str = "scratch_transformer") -> Path:
    """Copy ``source_package`` to ``directory/name`` with only the blog's API left; return the package dir."""
    spec = importlib.util.find_spec(source_package)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"cannot find package {source_package!r}")
    target = Path(directory) / name
    shutil.copytree(Path(next(iter(spec.submodule_search_locations))), target,
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = target / "__init__.py"
    init.write_text(init.read_text() + _STRIP)
    return target
