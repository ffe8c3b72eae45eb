"""Own-evidence wiring tests of the composite clauses: each composite against its OWN children composed.

A composite (``ResidualConnection``, ``EncoderBlock``, ``DecoderBlock``, ``Encoder``, ``Decoder``, ``Transformer``'s
``encode``/``decode``/``project``) is checked against an oracle built from the very child modules it holds, reached
by the contract's names (``norm``, ``residual_connections``, ``self_attention_block``, ``cross_attention_block``,
``feed_forward_block``, ``layers``, ``encoder``, ``decoder``, ``src_embed``, ``tgt_embed``, ``src_pos``,
``tgt_pos``, ``projection_layer``: docs/contract.md) and called as black boxes. The oracle relies on no other
clause: whatever the children compute (a wrong attention formula, a wrong LayerNorm, no ReLU in the FFN, a
log-softmax projection), the composite must equal its children wired as the contract says, so a FAIL here is a
wiring bug of the composite itself, a root (``@pytest.mark.own_evidence``). The formula tests
(test_equivalence_oracle.py, test_equivalence_torch.py) judge the children and the whole against the paper.

Everything runs in float64 in eval mode with dropout p = 0, so dropout is the identity whatever a child does with it
(even a child that drops in eval mode sees p = 0). Parameters are random and non-default
(``randomize_parameters_``), so every child, residual and layer differs from its siblings and a swap of two of them
shows. Masks are drawn by the suite's strategies (``tests.strategies.masks``: causal, key padding, random per head,
the blog's shapes), never with a fully masked row (whose values the contract leaves free). Source and target lengths
always differ, so a block or model that swaps the encoder output and the decoder input, or the source and target
masks, meets a shape it cannot broadcast or a value it does not expect.

Tolerance (``WIRING_ULPS``): both sides run the same float64 operations of the same child modules on the same
inputs. A correctly wired composite therefore agrees bit for bit, except where it orders a reduction differently
from a direct call of its child (a matmul blocked otherwise for another call shape, a fused or compiled kernel).
Reordering a sum of n terms moves it by at most 2 gamma_n sum|terms| ~ 2 n u sum|terms| = n eps sum|terms|
(Higham, *Accuracy and Stability of Numerical Algorithms*, section 3.1; u = eps / 2). Here n <= 32 (the widest
reduction: d_ff <= 32; d_model <= 16, lengths <= 6), and a difference passes through at most 7 stages in sequence
(two decoder layers of three residuals, then the final norm): 32 x 7 = 224 eps of the magnitudes summed. The
bound used is the suite's float64 floor, 4096 eps (9.1e-13; ``tolerances.FLOOR_EPS[float64]``) of the largest
finite magnitude among the expected output and the inputs (at least 1): a factor 18 above that for the gains a
difference meets on its way (a LayerNorm's alpha / std on unit-scale rows, Xavier-scaled weights), and still twelve
orders of magnitude below what a wiring bug moves (a missing skip, norm or mask changes outputs by O(0.1..1)).
Measured: every difference on this package, the 15 positive controls and the correct field models was exactly 0
(400 ``thorough`` examples per test on this package; also under ``--compile --compile-backend aot_eager``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from torch import nn

from reference.judge import tolerances
from reference.judge.compare import assert_close, check_output, describe, to_f64
from reference.kit import guard
from reference.spec import variants
from reference.spec.contract import build_model, construct, randomize_parameters_
from tests.strategies import (
    MASK_KINDS,
    AttentionConfig,
    AttentionInputs,
    ModelInputs,
    dense_arrays,
    dense_attention_inputs,
    feed_forward_widths,
    masks,
    model_configs,
    token_batches,
)
from tests.support import decoder, decoder_block, encoder, encoder_block

F64 = torch.float64
#: See the module docstring: the float64 floor, in eps of the largest magnitude compared (at least 1).
WIRING_ULPS = tolerances.FLOOR_EPS[F64]
#: Small sizes: every test runs its 20 ``ci`` examples well under half a second on the correct implementation.
SIZES = dict(max_batch=2, max_len=6, max_d_model=16, scales=("unit",))
seeds = st.integers(0, 2**16)


# ------------------------------------------------------------------------------------------------ helpers
def _tensor(a: np.ndarray | None, device: str, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def _randomized(module: nn.Module, seed: int) -> nn.Module:
    """``module`` with random non-default parameters, in eval mode (dropout, built with p = 0, is the identity)."""
    return randomize_parameters_(module, seed).eval()


def _assert_wired(composite: Callable[[], object], composed: Callable[[], object], *inputs: torch.Tensor,
                  component: str, config: dict) -> None:
    """The composite's output (``composite()``) equals its own children composed (``composed()``), whatever the
    children compute:

    * where the children composed raise on these inputs (a child that cannot take them), the composite must raise
      too (any exception: it cannot run what its children cannot), and there is nothing to compare; where only one
      side raises, the wiring differs (the composite's exception is re-raised, or an assertion says the composite
      returned a value its children composed cannot give);
    * where the children composed give NaN or inf, the composite must give the same non-finite value there;
    * elsewhere the two agree within ``WIRING_ULPS`` eps of the largest finite magnitude among the expected output
      and the float inputs (at least 1): the derivation is in the module docstring.

    The kit's own verdicts (``guard.KitClauseError``: an input modified in place) always propagate, as does a hang
    (``guard.ModelHung``, a BaseException)."""
    __tracebackhide__ = True
    try:
        actual = composite()
    except guard.KitClauseError:
        raise
    except Exception as failure:
        try:
            composed()
        except guard.KitClauseError:
            raise
        except Exception as theirs:  # the children cannot run on these inputs: no evidence on the wiring
            note(f"{component}: its own children composed raise too ({type(theirs).__name__}: {theirs}); "
                 f"the composite raised {type(failure).__name__}: {failure}")
            return
        raise  # the composite raises where its own children composed run: its wiring
    try:
        expected = composed()
    except guard.KitClauseError:
        raise
    except Exception as theirs:
        raise AssertionError(f"{describe(component, config)}: returned a value where its own children composed "
                             f"raise {type(theirs).__name__}: {theirs}") from theirs
    expected = check_output(expected, None, component=f"{component}'s own children composed", config=config)
    actual = check_output(actual, expected.shape, component=component, config=config)
    a, e = to_f64(actual), to_f64(expected)
    finite = torch.isfinite(e)
    if not bool(finite.all()):
        differ = ~finite & ~((torch.isnan(a) & torch.isnan(e)) | (a == e))
        if bool(differ.any()):
            first = tuple(int(i) for i in differ.nonzero()[0])
            raise AssertionError(
                f"{describe(component, config)}: its own children composed give {int((~finite).sum())} non-finite "
                f"element(s); the composite differs at {int(differ.sum())} of them (first at {first}: "
                f"{float(a[first])} where the children composed give {float(e[first])})")
    magnitudes = [float(t[torch.isfinite(t)].abs().max()) for t in (e, *map(to_f64, inputs))
                  if bool(torch.isfinite(t).any())]
    atol = WIRING_ULPS * tolerances.eps(F64) * max([1.0, *magnitudes])
    assert_close(a, e, rtol=0.0, atol=atol, component=component, config=config, where=finite)


@st.composite
def _decoder_inputs(draw) -> AttentionInputs:
    """Decoder inputs (``dense_attention_inputs(decoder=True)``: x [B, Lt, d], memory [B, Ls, d], a source mask
    [.., Lt, Ls] that masks a key of a row keeping another, a target mask [.., Lt, Lt]) with Ls != Lt, every query
    row keeping a visible key."""
    return draw(dense_attention_inputs(decoder=True, allow_fully_masked=False, require_masked_key=True,
                                       **SIZES).filter(lambda c: c.cfg.Lq != c.cfg.Lk))


# ------------------------------------------------------------------------------------------------ residual
@pytest.mark.clause(*variants.RESIDUAL_CLAUSES.values())
@pytest.mark.own_evidence
@given(case=dense_attention_inputs(cross=False, mask_kinds=("none",), **SIZES), seed=seeds)
def test_residual_connection_wires_its_own_norm_and_the_sublayer(impl, device, case: AttentionInputs,
                                                                 seed: int) -> None:
    """``ResidualConnection(x, sublayer)`` is ``x + sublayer(norm(x))`` (pre-norm; under ``--variant post-norm``
    ``norm(x + sublayer(x))``, and the run counts the test for ``residual.post-norm``), where ``norm`` is the
    residual's own ``norm`` called directly and ``sublayer`` a fixed function of the test's (a random linear map
    then tanh): whatever the norm computes, only where the residual puts it, the skip and the sublayer matter."""
    variant = variants.variant()
    config = {**case.describe(), "variant": variant, "seed": seed}
    note(config)
    d = case.cfg.d_model
    res = _randomized(construct(impl.ResidualConnection, d, 0.0, device=device, dtype=F64), seed)
    gen = torch.Generator().manual_seed(seed)
    weight = ((torch.rand(d, d, generator=gen, dtype=F64) * 2 - 1) * (6.0 / (2 * d)) ** 0.5).to(device)
    bias = (torch.rand(d, generator=gen, dtype=F64) - 0.5).to(device)

    def sublayer(y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(y @ weight.T + bias)

    x = _tensor(case.x, device, F64)
    if variant == variants.PRE_NORM:
        composed = lambda: x + sublayer(res.norm(x))  # noqa: E731
    else:
        composed = lambda: res.norm(x + sublayer(x))  # noqa: E731
    with torch.no_grad():
        _assert_wired(lambda: res(x, sublayer), composed, x, component=f"ResidualConnection ({variant})",
                      config=config)


# ------------------------------------------------------------------------------------------------ blocks
@pytest.mark.clause("encoder.block")
@pytest.mark.own_evidence
@given(case=dense_attention_inputs(cross=False, allow_fully_masked=False, require_masked_key=True, **SIZES),
       d_ff=feed_forward_widths(32), seed=seeds)
def test_encoder_block_wires_its_own_children(impl, device, case: AttentionInputs, d_ff: int, seed: int) -> None:
    """``EncoderBlock(x, src_mask)`` is ``r1(r0(x, lambda y: self_attention_block(y, y, y, src_mask)),
    feed_forward_block)``, ``r0, r1 = residual_connections``, each child the block's own, called as a black box.
    The source mask masks a key of a row that keeps another, so a block that drops it is seen."""
    config = {**case.describe(), "d_ff": d_ff, "seed": seed}
    note(config)
    cfg = case.cfg
    block = _randomized(encoder_block(impl, cfg.d_model, cfg.h, d_ff, 0.0, device, F64), seed)
    x, src_mask = _tensor(case.x, device, F64), _tensor(case.mask, device)
    r0, r1 = block.residual_connections[0], block.residual_connections[1]
    attention, ffn = block.self_attention_block, block.feed_forward_block
    with torch.no_grad():
        _assert_wired(lambda: block(x, src_mask), lambda: r1(r0(x, lambda y: attention(y, y, y, src_mask)), ffn), x,
                      component="EncoderBlock", config=config)


@pytest.mark.clause("decoder.block")
@pytest.mark.own_evidence
@given(case=_decoder_inputs(), d_ff=feed_forward_widths(32), seed=seeds)
def test_decoder_block_wires_its_own_children(impl, device, case: AttentionInputs, d_ff: int, seed: int) -> None:
    """``DecoderBlock(x, encoder_output, src_mask, tgt_mask)`` is, with ``r0, r1, r2 = residual_connections``:
    ``y = r0(x, lambda t: self_attention_block(t, t, t, tgt_mask))`` (masked self-attention over x),
    ``y = r1(y, lambda t: cross_attention_block(t, encoder_output, encoder_output, src_mask))`` (queries from the
    decoder, keys and values from the encoder output), ``r2(y, feed_forward_block)``: each child the block's own.
    Lt != Ls, and the source mask masks a key of a row that keeps another."""
    config = {**case.describe(), "d_ff": d_ff, "seed": seed}
    note(config)
    cfg = case.cfg
    block = _randomized(decoder_block(impl, cfg.d_model, cfg.h, d_ff, 0.0, device, F64), seed)
    x, memory = _tensor(case.x, device, F64), _tensor(case.memory, device, F64)
    src_mask, tgt_mask = _tensor(case.mask, device), _tensor(case.self_mask, device)
    r0, r1, r2 = (block.residual_connections[i] for i in range(3))
    self_attention, cross_attention = block.self_attention_block, block.cross_attention_block

    def composed() -> torch.Tensor:
        y = r0(x, lambda t: self_attention(t, t, t, tgt_mask))
        y = r1(y, lambda t: cross_attention(t, memory, memory, src_mask))
        return r2(y, block.feed_forward_block)

    with torch.no_grad():
        _assert_wired(lambda: block(x, memory, src_mask, tgt_mask), composed, x, memory, component="DecoderBlock",
                      config=config)


# ------------------------------------------------------------------------------------------------ stacks
@pytest.mark.clause("encoder.stack")
@pytest.mark.own_evidence
@given(case=dense_attention_inputs(cross=False, allow_fully_masked=False, **SIZES), N=st.integers(1, 2),
       d_ff=feed_forward_widths(32), seed=seeds)
def test_encoder_applies_its_own_layers_in_order_then_its_norm(impl, device, case: AttentionInputs, N: int,
                                                               d_ff: int, seed: int) -> None:
    """``Encoder(x, mask)`` is its own ``norm(layers[N-1](... layers[0](x, mask) ..., mask))``, each layer and the
    norm called as black boxes (the layers differ: random parameters each)."""
    config = {**case.describe(), "N": N, "d_ff": d_ff, "seed": seed}
    note(config)
    cfg = case.cfg
    enc = _randomized(encoder(impl, N, cfg.d_model, cfg.h, d_ff, 0.0, device, F64), seed)
    x, mask = _tensor(case.x, device, F64), _tensor(case.mask, device)

    def composed() -> torch.Tensor:
        y = x
        for layer in enc.layers:
            y = layer(y, mask)
        return enc.norm(y)

    with torch.no_grad():
        _assert_wired(lambda: enc(x, mask), composed, x, component="Encoder", config=config)


@pytest.mark.clause("decoder.stack")
@pytest.mark.own_evidence
@given(case=_decoder_inputs(), N=st.integers(1, 2), d_ff=feed_forward_widths(32), seed=seeds)
def test_decoder_applies_its_own_layers_in_order_then_its_norm(impl, device, case: AttentionInputs, N: int,
                                                               d_ff: int, seed: int) -> None:
    """``Decoder(x, encoder_output, src_mask, tgt_mask)`` is its own ``norm`` of its ``layers`` applied in order,
    each ``layer(y, encoder_output, src_mask, tgt_mask)`` (Lt != Ls: a swapped argument shows)."""
    config = {**case.describe(), "N": N, "d_ff": d_ff, "seed": seed}
    note(config)
    cfg = case.cfg
    dec = _randomized(decoder(impl, N, cfg.d_model, cfg.h, d_ff, 0.0, device, F64), seed)
    x, memory = _tensor(case.x, device, F64), _tensor(case.memory, device, F64)
    src_mask, tgt_mask = _tensor(case.mask, device), _tensor(case.self_mask, device)

    def composed() -> torch.Tensor:
        y = x
        for layer in dec.layers:
            y = layer(y, memory, src_mask, tgt_mask)
        return dec.norm(y)

    with torch.no_grad():
        _assert_wired(lambda: dec(x, memory, src_mask, tgt_mask), composed, x, memory, component="Decoder",
                      config=config)


# ------------------------------------------------------------------------------------------------ model
#: The masks a whole model takes (tests.strategies.MODEL_*_MASK_KINDS), always one: a source mask must broadcast
#: over [.., Ls, Ls] and [.., Lt, Ls]; the target mask is the decoder's self-attention mask [.., Lt, Lt].
SRC_MASK_KINDS = ("key_padding", "blog_key")
TGT_MASK_KINDS = ("causal", "random", "blog_full", "blog_shared")
assert set(SRC_MASK_KINDS + TGT_MASK_KINDS) <= set(MASK_KINDS)


@st.composite
def _model_cases(draw) -> tuple[ModelInputs, np.ndarray, np.ndarray]:
    """(a small model with token batches src [B, Ls], tgt [B, Lt], Ls != Lt, and their masks; a float memory
    [B, Ls, d] for ``decode``; a float x [B, Lt, d] for ``project``)."""
    # one layer per stack: the stacks' own wiring (layers in order, then the norm) is judged above
    cfg = draw(model_configs(max_d_model=8, max_N=1, max_len=6, max_vocab=20))
    # an even width (d_k doubled when h * d_k is odd): a table that cannot be built for an odd d_model is
    # pe.formula's question, not the composition's; both tables need room for Ls != Lt
    cfg = replace(cfg, d_model=cfg.d_model * (1 + cfg.d_model % 2), src_seq_len=max(cfg.src_seq_len, 2),
                  tgt_seq_len=max(cfg.tgt_seq_len, 2))
    B = draw(st.integers(1, 2))
    Ls = draw(st.integers(1, cfg.src_seq_len))
    Lt = draw(st.sampled_from([n for n in range(1, cfg.tgt_seq_len + 1) if n != Ls]))
    d_k = cfg.d_model // cfg.h
    src_kind, src_mask = draw(masks(AttentionConfig(B=B, h=cfg.h, d_k=d_k, Lq=Ls, Lk=Ls),
                                    kind=draw(st.sampled_from(SRC_MASK_KINDS)), allow_fully_masked=False))
    tgt_kind, tgt_mask = draw(masks(AttentionConfig(B=B, h=cfg.h, d_k=d_k, Lq=Lt, Lk=Lt),
                                    kind=draw(st.sampled_from(TGT_MASK_KINDS)), allow_fully_masked=False))
    case = ModelInputs(cfg, draw(token_batches(B, Ls, cfg.src_vocab_size)),
                       draw(token_batches(B, Lt, cfg.tgt_vocab_size)), src_kind, src_mask, tgt_kind, tgt_mask)
    return case, draw(dense_arrays((B, Ls, cfg.d_model))), draw(dense_arrays((B, Lt, cfg.d_model)))


@pytest.mark.clause("transformer.compose")
@pytest.mark.own_evidence
@given(drawn=_model_cases(), seed=seeds)
def test_transformer_composes_its_own_parts(impl, device, drawn: tuple[ModelInputs, np.ndarray, np.ndarray],
                                            seed: int) -> None:
    """A built model's ``encode(src, src_mask)`` is its own ``encoder(src_pos(src_embed(src)), src_mask)``;
    ``decode(memory, src_mask, tgt, tgt_mask)`` its own ``decoder(tgt_pos(tgt_embed(tgt)), memory, src_mask,
    tgt_mask)``; ``project(x)`` its own ``projection_layer(x)`` (whatever that returns: its logits are
    projection.logits' question). Each method is judged on its own inputs (memory and x drawn, not the model's
    outputs), with Ls != Lt and each embedding its own random table, so a swapped embedding, mask or argument
    shows (the two position tables hold the same formula: a swap of them changes no value and is not a bug)."""
    case, memory_array, x_array = drawn
    config = {**case.describe(), "seed": seed}
    note(config)
    model = _randomized(build_model(impl, case.cfg, device=device, dtype=F64), seed)
    src, tgt = _tensor(case.src, device), _tensor(case.tgt, device)
    src_mask, tgt_mask = _tensor(case.src_mask, device), _tensor(case.tgt_mask, device)
    memory, x = _tensor(memory_array, device, F64), _tensor(x_array, device, F64)
    with torch.no_grad():
        _assert_wired(lambda: model.encode(src, src_mask),
                      lambda: model.encoder(model.src_pos(model.src_embed(src)), src_mask),
                      component="Transformer.encode", config=config)
        _assert_wired(lambda: model.decode(memory, src_mask, tgt, tgt_mask),
                      lambda: model.decoder(model.tgt_pos(model.tgt_embed(tgt)), memory, src_mask, tgt_mask), memory,
                      component="Transformer.decode", config=config)
        _assert_wired(lambda: model.project(x), lambda: model.projection_layer(x), x,
                      component="Transformer.project", config=config)
