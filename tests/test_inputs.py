"""Bad input gets a specific error, raised early (this package's own hardening, not the conformance contract)."""

from __future__ import annotations

import re

import pytest
import torch

from reference.spec.contract import ModelConfig, build_model

pytestmark = [pytest.mark.strict("bad constructor arguments and inputs raise a specific error early"),
              pytest.mark.clause("strict.bad-inputs")]


@pytest.mark.parametrize(("d_model", "h"), [(10, 3), (64, 5), (6, 4)])
def test_multi_head_attention_rejects_indivisible_d_model(impl, d_model: int, h: int) -> None:
    with pytest.raises(ValueError, match=rf"^d_model={d_model} is not divisible by h={h}$"):
        impl.MultiHeadAttentionBlock(d_model, h, 0.0)


#: (factory, good positional arguments, index of each size argument, its name): every size check of every constructor.
SIZE_ARGUMENTS = [
    ("InputEmbeddings", (8, 10), 0, "d_model"), ("InputEmbeddings", (8, 10), 1, "vocab_size"),
    ("PositionalEncoding", (8, 4, 0.0), 0, "d_model"), ("PositionalEncoding", (8, 4, 0.0), 1, "seq_len"),
    ("LayerNormalization", (8,), 0, "features"),
    ("FeedForwardBlock", (8, 16, 0.0), 0, "d_model"), ("FeedForwardBlock", (8, 16, 0.0), 1, "d_ff"),
    ("MultiHeadAttentionBlock", (8, 2, 0.0), 0, "d_model"), ("MultiHeadAttentionBlock", (8, 2, 0.0), 1, "h"),
    ("ProjectionLayer", (8, 7), 0, "d_model"), ("ProjectionLayer", (8, 7), 1, "vocab_size"),
    ("build_transformer", (5, 5, 4, 4, 8, 1, 2, 0.0, 8), 5, "N"),
    ("causal_mask", (3,), 0, "size"),
]


@pytest.mark.parametrize(("factory", "args", "index", "name"), SIZE_ARGUMENTS)
@pytest.mark.parametrize(("bad", "error", "message"), [
    (0, ValueError, "{name}=0 must be a positive integer"), (-1, ValueError, "{name}=-1 must be a positive integer"),
    (8.0, TypeError, "{name} must be an int, got float 8.0"), (True, TypeError, "{name} must be an int, got bool True"),
    ("8", TypeError, "{name} must be an int, got str '8'"),
], ids=["zero", "negative", "float", "bool", "str"])
def test_constructors_reject_non_positive_or_non_int_sizes(impl, factory: str, args: tuple, index: int, name: str,
                                                           bad: object, error: type, message: str) -> None:
    """Each size argument, by its own name: ``d_model=0 must be a positive integer``, ``h must be an int, ...``."""
    bad_args = args[:index] + (bad,) + args[index + 1:]
    with pytest.raises(error, match="^" + re.escape(message.format(name=name)) + "$"):
        getattr(impl, factory)(*bad_args)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize("factory", ["PositionalEncoding", "FeedForwardBlock", "MultiHeadAttentionBlock"])
def test_constructors_reject_dropout_outside_unit_interval(impl, factory: str, p: float) -> None:
    args = {"PositionalEncoding": (8, 4, p), "FeedForwardBlock": (8, 16, p), "MultiHeadAttentionBlock": (8, 2, p)}
    with pytest.raises(ValueError, match=rf"^dropout={p} is outside \[0, 1\)$"):
        getattr(impl, factory)(*args[factory])


@pytest.mark.parametrize(("bad", "message"), [
    ("0.1", "dropout must be a float in [0, 1), got str '0.1'"), (None, "dropout must be a float in [0, 1), got NoneType None"),
    (False, "dropout must be a float in [0, 1), got bool False"),
])
@pytest.mark.parametrize("factory", ["PositionalEncoding", "FeedForwardBlock", "MultiHeadAttentionBlock"])
def test_constructors_reject_non_numeric_dropout(impl, factory: str, bad: object, message: str) -> None:
    args = {"PositionalEncoding": (8, 4, bad), "FeedForwardBlock": (8, 16, bad), "MultiHeadAttentionBlock": (8, 2, bad)}
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        getattr(impl, factory)(*args[factory])


@pytest.mark.parametrize("eps", [0, 0.0, -1e-6, True, "1e-6", None])
def test_layer_normalization_rejects_a_non_positive_or_non_numeric_eps(impl, eps: object) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(f"eps={eps!r} must be a positive number") + "$"):
        impl.LayerNormalization(8, eps)


def test_build_transformer_rejects_bad_sizes(impl) -> None:
    with pytest.raises(ValueError, match="^d_model=10 is not divisible by h=3$"):
        impl.build_transformer(5, 5, 4, 4, d_model=10, N=1, h=3, d_ff=8)
    with pytest.raises(ValueError, match="^N=0 must be a positive integer$"):
        impl.build_transformer(5, 5, 4, 4, d_model=8, N=0, h=2, d_ff=8)
    with pytest.raises(TypeError, match="^d_model must be an int, got float 8.0$"):
        impl.build_transformer(5, 5, 4, 4, d_model=8.0, N=1, h=2, d_ff=8)


def test_positional_encoding_rejects_sequence_longer_than_seq_len(impl) -> None:
    pe = impl.PositionalEncoding(8, 5, 0.0)
    with pytest.raises(ValueError, match="^sequence length 6 is longer than seq_len=5$"):
        pe(torch.zeros(2, 6, 8))


@pytest.mark.parametrize("factory,args", [
    ("PositionalEncoding", (8, 5, 0.0)), ("LayerNormalization", (8,)), ("FeedForwardBlock", (8, 16, 0.0)),
    ("ProjectionLayer", (8, 7)),
])
def test_modules_reject_wrong_last_dimension(impl, factory: str, args: tuple) -> None:
    module = getattr(impl, factory)(*args)
    with pytest.raises(ValueError, match=r"^x has last dimension \(7,\) != d_model=8 \(shape \(2, 3, 7\)\)$"):
        module(torch.zeros(2, 3, 7))


def test_attention_rejects_wrong_last_dimension_per_argument(impl) -> None:
    mha = impl.MultiHeadAttentionBlock(8, 2, 0.0)
    good, bad = torch.zeros(2, 3, 8), torch.zeros(2, 3, 6)
    for name, args in (("q", (bad, good, good)), ("k", (good, bad, good)), ("v", (good, good, bad))):
        with pytest.raises(ValueError, match=rf"^{name} has last dimension \(6,\) != d_model=8 \(shape \(2, 3, 6\)\)$"):
            mha(*args, None)


def test_attention_rejects_mismatched_batch_and_lengths(impl) -> None:
    mha = impl.MultiHeadAttentionBlock(8, 2, 0.0)
    for k_batch, v_batch in ((3, 3), (3, 2), (2, 3)):  # k and v off together, k alone, v alone
        with pytest.raises(ValueError, match=rf"^batch sizes differ: q \(2, 3, 8\), k \({k_batch}, 4, 8\), "
                                             rf"v \({v_batch}, 4, 8\)$"):
            mha(torch.zeros(2, 3, 8), torch.zeros(k_batch, 4, 8), torch.zeros(v_batch, 4, 8), None)
    with pytest.raises(ValueError, match=r"^k and v lengths differ: k \(2, 4, 8\), v \(2, 5, 8\)$"):
        mha(torch.zeros(2, 3, 8), torch.zeros(2, 4, 8), torch.zeros(2, 5, 8), None)


def _broadcast_message(shape: tuple, target: tuple, axis: str, have: int, want: int) -> str:
    return (rf"^mask of shape {re.escape(str(shape))} cannot broadcast to \[B, h, Lq, Lk\]={re.escape(str(target))}: "
            rf"size {have} on axis {axis} \(expected 1 or {want}\)$")


@pytest.mark.parametrize(("mask_shape", "message"), [
    ((2, 1, 1, 5), _broadcast_message((2, 1, 1, 5), (3, 2, 4, 5), "B", 2, 3)),  # batch 2 against B = 3
    ((3, 1, 4, 4), _broadcast_message((3, 1, 4, 4), (3, 2, 4, 5), "Lk", 4, 5)),  # keys 4 against Lk = 5
    ((3, 3, 1, 5), _broadcast_message((3, 3, 1, 5), (3, 2, 4, 5), "h", 3, 2)),  # 3 heads against h = 2
    ((1, 1, 3, 5), _broadcast_message((1, 1, 3, 5), (3, 2, 4, 5), "Lq", 3, 4)),  # 3 queries against Lq = 4
    ((3, 4, 5), _broadcast_message((3, 4, 5), (3, 2, 4, 5), "h", 3, 2)),  # [B, Lq, Lk] would land on the heads
    ((2, 4, 5), r"^mask of shape \(2, 4, 5\) is ambiguous: a 3-D mask lines up with \[h, Lq, Lk\]; give a "
                r"per-batch mask as \[B, 1, Lq, Lk\] and a per-head mask as \[1, h, Lq, Lk\]$"),  # B == h
    ((1, 3, 1, 1, 5), r"^mask of shape \(1, 3, 1, 1, 5\) has more than 4 dims; expected broadcastable to "
                      r"\[B, h, Lq, Lk\]=\(3, 2, 4, 5\)$"),
])
def test_attention_rejects_masks_that_do_not_broadcast(impl, mask_shape: tuple, message: str) -> None:
    mha = impl.MultiHeadAttentionBlock(8, 2, 0.0)
    q, kv = torch.zeros(3, 4, 8), torch.zeros(3, 5, 8)
    if mask_shape == (2, 4, 5):  # B == h == 2 so the shape broadcasts and only the axis check can refuse it
        q, kv = torch.zeros(2, 4, 8), torch.zeros(2, 5, 8)
    with pytest.raises(ValueError, match=message):
        mha(q, kv, kv, torch.ones(mask_shape, dtype=torch.bool))


def test_attention_rejects_floating_mask(impl) -> None:
    mha = impl.MultiHeadAttentionBlock(8, 2, 0.0)
    x = torch.zeros(1, 3, 8)
    with pytest.raises(TypeError, match=r"^mask must be a bool or integer tensor \(nonzero = may attend\), got dtype torch.float32$"):
        mha(x, x, x, torch.ones(1, 1, 3, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_embeddings_reject_non_integer_token_ids(impl, dtype: torch.dtype) -> None:
    emb = impl.InputEmbeddings(8, 10)
    with pytest.raises(TypeError, match=f"^x must hold integer token ids, got dtype {dtype}$"):
        emb(torch.zeros(2, 3, dtype=dtype))


def test_embeddings_reject_wrong_rank(impl) -> None:
    with pytest.raises(ValueError, match=r"^x must have shape \[B, L\], got \(6,\)$"):
        impl.InputEmbeddings(8, 10)(torch.zeros(6, dtype=torch.long))


def test_model_rejects_float_tokens_and_long_targets(impl) -> None:
    model = build_model(impl, ModelConfig(src_seq_len=4, tgt_seq_len=4))
    with pytest.raises(TypeError, match="^x must hold integer token ids, got dtype torch.float32$"):
        model.encode(torch.zeros(1, 3), None)
    memory = model.encode(torch.zeros(1, 3, dtype=torch.long), None)
    with pytest.raises(ValueError, match="^sequence length 5 is longer than seq_len=4$"):
        model.decode(memory, None, torch.zeros(1, 5, dtype=torch.long), None)


def test_mask_helpers_reject_bad_arguments(impl) -> None:
    with pytest.raises(ValueError, match="^size=0 must be a positive integer$"):
        impl.causal_mask(0)
    with pytest.raises(TypeError, match="^tokens must hold integer token ids, got dtype torch.float32$"):
        impl.padding_mask(torch.zeros(2, 3), 0)
    with pytest.raises(TypeError, match="^pad_id must be an int, got float 0.5$"):
        impl.padding_mask(torch.zeros(2, 3, dtype=torch.long), 0.5)


#: (factory, constructor arguments, the input's name, whether the module takes only [B, L, d]).
FEATURE_INPUTS = [
    ("PositionalEncoding", (8, 5, 0.0), "x", True), ("LayerNormalization", (8,), "x", False),
    ("FeedForwardBlock", (8, 16, 0.0), "x", False), ("ProjectionLayer", (8, 7), "x", False),
    ("MultiHeadAttentionBlock", (8, 2, 0.0), "q", True),
]


def _call(module, x) -> torch.Tensor:
    return module(x, x, x, None) if isinstance(module, torch.nn.Module) and hasattr(module, "w_q") else module(x)


@pytest.mark.parametrize(("factory", "args", "name", "three_d"), FEATURE_INPUTS)
def test_modules_reject_non_tensor_integer_and_dimensionless_inputs(impl, factory: str, args: tuple, name: str,
                                                                    three_d: bool) -> None:
    """A list, an integer tensor, a 0-D tensor and a 1-D tensor of the wrong size: each refused by name."""
    module = getattr(impl, factory)(*args)
    cases = [([1.0] * 8, TypeError, f"{name} must be a torch.Tensor, got list"),
             (torch.zeros(2, 3, 8, dtype=torch.long), TypeError,
              f"{name} must be a floating-point tensor, got dtype torch.int64")]
    if three_d:
        cases += [(torch.zeros(()), ValueError, f"{name} must have 3 dims, got shape ()"),
                  (torch.zeros(3, 8), ValueError, f"{name} must have 3 dims, got shape (3, 8)")]
    else:
        cases += [(torch.zeros(()), ValueError, f"{name} has last dimension () != d_model=8 (shape ())"),
                  (torch.zeros(7), ValueError, f"{name} has last dimension (7,) != d_model=8 (shape (7,))")]
    for x, error, message in cases:
        with pytest.raises(error, match="^" + re.escape(message) + "$"):
            _call(module, x)


@pytest.mark.strict("position-wise modules take any [..., d] input")
@pytest.mark.clause("strict.any-leading-shape")
@pytest.mark.parametrize("factory,args,out", [
    ("LayerNormalization", (8,), 8), ("FeedForwardBlock", (8, 16, 0.0), 8), ("ProjectionLayer", (8, 7), 7),
])
def test_position_wise_modules_take_any_leading_shape(impl, factory: str, args: tuple, out: int) -> None:
    """LayerNorm, feed-forward and projection act on the last dim alone, as nn.LayerNorm/nn.Linear: [d] and
    [a, b, c, d] are as valid as [B, L, d]."""
    module = getattr(impl, factory)(*args)
    for shape in [(8,), (2, 8), (2, 1, 3, 8)]:
        assert tuple(module(torch.randn(shape)).shape) == shape[:-1] + (out,)


@pytest.mark.parametrize(("bad", "error", "message"), [
    ([[1, 2]], TypeError, "{name} must be a torch.Tensor of token ids, got list"),
    (torch.zeros(2, 3, dtype=torch.complex64), TypeError, "{name} must hold integer token ids, got dtype torch.complex64"),
    (torch.zeros(2, 3, 1, dtype=torch.long), ValueError, "{name} must have shape [B, L], got (2, 3, 1)"),
])
@pytest.mark.parametrize("site", ["embeddings", "padding_mask"])
def test_token_inputs_are_refused_by_name(impl, site: str, bad: object, error: type, message: str) -> None:
    call, name = ((lambda t: impl.InputEmbeddings(8, 10)(t)), "x") if site == "embeddings" else \
        ((lambda t: impl.padding_mask(t, 0)), "tokens")
    with pytest.raises(error, match="^" + re.escape(message.format(name=name)) + "$"):
        call(bad)


def test_padding_mask_rejects_a_bool_pad_id(impl) -> None:
    with pytest.raises(TypeError, match="^pad_id must be an int, got bool True$"):
        impl.padding_mask(torch.zeros(2, 3, dtype=torch.long), True)


@pytest.mark.parametrize(("mask", "message"), [
    ([[True]], "mask must be None or a torch.Tensor, got list"),
    (torch.ones(1, 1, 3, 3, dtype=torch.complex64),
     "mask must be a bool or integer tensor (nonzero = may attend), got dtype torch.complex64"),
])
def test_attention_rejects_non_tensor_and_complex_masks(impl, mask: object, message: str) -> None:
    x = torch.zeros(1, 3, 8)
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        impl.MultiHeadAttentionBlock(8, 2, 0.0)(x, x, x, mask)
