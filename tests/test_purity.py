"""module.pure: a call leaves its inputs and torch's global state as it found it.

The kit guards every test of the implementation too (``reference.kit.guard``: each outermost module forward's tensor
arguments are compared with copies taken before the call, and the global state around each test), so a side effect
is a FAIL of module.pure wherever it happens, never a "not close" of the formula the test was judging. This test
calls the whole model directly, with every input the contract passes (token ids and both masks, which the guard's
hooks on module forwards do not see when ``encode``/``decode`` receive them), in eval mode, where no dropout draws.
"""

from __future__ import annotations

import pytest
import torch

from reference.kit import guard
from reference.kit.card import NOT_REACHED
from reference.spec.contract import ModelConfig, build_model
from tests.support import encode_decode_project

CFG = ModelConfig(src_vocab_size=11, tgt_vocab_size=13, src_seq_len=8, tgt_seq_len=8, d_model=8, N=1, h=2,
                  dropout=0.1, d_ff=16)


def _inputs(gen: torch.Generator) -> dict[str, torch.Tensor]:
    src = torch.randint(0, CFG.src_vocab_size, (2, 5), generator=gen)
    tgt = torch.randint(0, CFG.tgt_vocab_size, (2, 4), generator=gen)
    src_mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    src_mask[1, ..., 3:] = False  # a padded source: the second sequence has 3 tokens
    tgt_mask = torch.tril(torch.ones(1, 4, 4, dtype=torch.bool))
    return {"src": src, "tgt": tgt, "src_mask": src_mask, "tgt_mask": tgt_mask}


def _run(model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encode, decode, project: {"memory": encode's output (decode's input), "decoded", "logits"}."""
    try:
        with torch.no_grad():
            out = encode_decode_project(model, inputs["src"], inputs["tgt"], inputs["src_mask"], inputs["tgt_mask"])
        return dict(zip(("memory", "decoded", "logits"), out))
    except Exception as exc:  # noqa: BLE001: a model that cannot run gives no verdict on purity
        pytest.skip(f"{NOT_REACHED} transformer.compose: encode/decode/project raised {type(exc).__name__}: {exc}")


def _touched(inputs: dict[str, torch.Tensor], pristine: dict[str, torch.Tensor], versions: dict[str, int]) -> list[str]:
    """The inputs whose values changed, or that were written at all (their version counter moved: a write that
    leaves the values as they were, a mask inverted and inverted back, is still a write into the caller's tensor)."""
    return [f"{k} (values changed)" if not guard.same(v, pristine[k]) else f"{k} ({v._version - versions[k]} "
            "in-place write(s), values the same)" for k, v in inputs.items()
            if not guard.same(v, pristine[k]) or v._version != versions[k]]


@pytest.mark.clause("module.pure")
def test_a_call_leaves_its_inputs_the_global_state_and_the_rng_alone(impl) -> None:
    """``encode``/``decode``/``project`` in eval mode: every input (tokens, masks) neither changed nor written;
    default dtype, grad mode, deterministic flags and matmul precision unchanged; the RNG unchanged (eval mode draws
    no dropout: a model that seeds the RNG in its forward makes every later dropout mask the same). A second call
    leaves the first call's tensors alone too: its inputs and ``memory`` (``encode``'s output, ``decode``'s input),
    which a model that kept a reference to them could write into later."""
    gen = torch.Generator().manual_seed(0)
    model = build_model(impl, CFG).eval()
    inputs = _inputs(gen)
    pristine = {k: v.clone() for k, v in inputs.items()}
    versions = {k: v._version for k, v in inputs.items()}
    torch.manual_seed(int(torch.randint(1, 2**31, (1,), generator=gen)))  # not a state a model would seed
    state, rng = guard.snapshot(), torch.get_rng_state()
    first = _run(model, inputs)
    touched = _touched(inputs, pristine, versions)
    assert not touched, f"Transformer.encode/decode/project modified its input(s) in place: {touched}"
    changed = guard.changes(state, guard.snapshot())
    assert not changed, "Transformer.encode/decode/project changed torch's global state: " + "; ".join(changed)
    assert torch.equal(torch.get_rng_state(), rng), (
        "Transformer.encode/decode/project changed the RNG state in eval mode, where no dropout draws (a "
        "torch.manual_seed or a random draw in the forward: every later dropout mask depends on it)")
    held = {**inputs, **first}  # what the caller holds after the first call: its inputs, and decode's input memory
    pristine = {k: v.clone() for k, v in held.items()}
    versions = {k: v._version for k, v in held.items()}
    _run(model, _inputs(gen))  # another call, other inputs
    touched = _touched(held, pristine, versions)
    assert not touched, (f"a second call of Transformer.encode/decode/project modified tensors of the first call in "
                         f"place: {touched} (the model kept a reference to them and wrote into it)")
