"""It learns: a small model overfits a toy copy task and greedy decoding then reproduces the sequences exactly;
one training step reaches every parameter.

This catches what forward comparisons share with their reference: a gradient that never reaches a parameter, a
mask that differs between training (teacher forcing, whole target at once) and inference (one token at a time).
"""

from __future__ import annotations

import pytest

from dataclasses import replace

import torch
import torch.nn.functional as F
from hypothesis import given, note
from hypothesis import strategies as st

from reference.spec.contract import ModelConfig, build_model, missing_extras
from tests.strategies import ModelBatch, model_batches

pytestmark = pytest.mark.clause("model.learns")

PAD, SOS, EOS = 0, 1, 2
#: The copy task: 16 sequences of 3..6 symbols from 9, learned by d=32, N=2, h=4 with Adam.
COPY_VOCAB, COPY_SEQUENCES, COPY_MIN_LEN, COPY_MAX_LEN = 12, 16, 3, 6
COPY_MODEL = ModelConfig(src_vocab_size=COPY_VOCAB, tgt_vocab_size=COPY_VOCAB, src_seq_len=COPY_MAX_LEN + 1,
                         tgt_seq_len=COPY_MAX_LEN + 1, d_model=32, N=2, h=4, dropout=0.0, d_ff=64)
COPY_STEPS, COPY_LR = 80, 1e-2
#: The loss must fall below this fraction of its first value (reached: ~0.001 / 3.4 over seeds 0..14), and
#: its mean over each quarter of training must be below the previous quarter's.
COPY_LOSS_DROP = 0.02


def _mask_makers(impl):
    """(causal(size) -> Bool[1, L, L], padding(tokens) -> Bool[B, 1, 1, L]): the implementation's helpers where it
    has them, else the same masks built here."""
    if missing_extras(impl, "causal_mask"):
        def causal(size: int) -> torch.Tensor:
            return torch.tril(torch.ones(1, size, size, dtype=torch.bool))
    else:
        causal = impl.causal_mask
    if missing_extras(impl, "padding_mask"):
        def padding(tokens: torch.Tensor) -> torch.Tensor:
            return (tokens != PAD)[:, None, None, :]
    else:
        def padding(tokens: torch.Tensor) -> torch.Tensor:
            return impl.padding_mask(tokens, PAD)
    return causal, padding


def _copy_data(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """src [S, Lmax] (sequence, then PAD), decoder input [S, Lmax + 1] (SOS, sequence, PAD), labels
    [S, Lmax + 1] (sequence, EOS, PAD) and the lengths."""
    lengths = torch.randint(COPY_MIN_LEN, COPY_MAX_LEN + 1, (COPY_SEQUENCES,), generator=gen).tolist()
    src = torch.full((COPY_SEQUENCES, COPY_MAX_LEN), PAD)
    dec_in = torch.full((COPY_SEQUENCES, COPY_MAX_LEN + 1), PAD)
    labels = torch.full((COPY_SEQUENCES, COPY_MAX_LEN + 1), PAD)
    for i, n in enumerate(lengths):
        seq = torch.randint(EOS + 1, COPY_VOCAB, (n,), generator=gen)
        src[i, :n], dec_in[i, 0], dec_in[i, 1:n + 1] = seq, SOS, seq
        labels[i, :n], labels[i, n] = seq, EOS
    return src, dec_in, labels, lengths


def _greedy(model, src: torch.Tensor, steps: int, causal, padding) -> torch.Tensor:
    """Greedy decoding: start from SOS, feed back the argmax of the last position, ``steps`` times."""
    src_mask = padding(src)
    memory = model.encode(src, src_mask)
    ys = torch.full((src.shape[0], 1), SOS)
    for _ in range(steps):
        tgt_mask = causal(ys.shape[1]) & padding(ys)
        logits = model.project(model.decode(memory, src_mask, ys, tgt_mask))
        ys = torch.cat([ys, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return ys[:, 1:]


def test_transformer_overfits_copy_task_and_greedy_decodes_it(impl) -> None:
    """d=32, N=2, h=4, Adam, 80 full-batch steps: the loss falls 50-fold, quarter after quarter, and greedy
    decoding with causal/padding masks reproduces every held-in sequence and its EOS exactly."""
    torch.manual_seed(0)
    causal, padding = _mask_makers(impl)
    src, dec_in, labels, lengths = _copy_data(torch.Generator().manual_seed(0))
    model = build_model(impl, COPY_MODEL).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=COPY_LR)
    src_mask, tgt_mask = padding(src), causal(dec_in.shape[1]) & padding(dec_in)
    losses = []
    for _ in range(COPY_STEPS):
        logits = model.project(model.decode(model.encode(src, src_mask), src_mask, dec_in, tgt_mask))
        loss = F.cross_entropy(logits.reshape(-1, COPY_VOCAB), labels.reshape(-1), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    quarter = COPY_STEPS // 4
    means = [sum(losses[i * quarter:(i + 1) * quarter]) / quarter for i in range(4)]
    assert all(b < a for a, b in zip(means, means[1:])), f"quarter-mean loss does not keep decreasing: {means}"
    assert losses[-1] < COPY_LOSS_DROP * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.4f}: not overfitted"
    model.eval()
    with torch.no_grad():
        decoded = _greedy(model, src, COPY_MAX_LEN + 1, causal, padding)
    wrong = [i for i, n in enumerate(lengths) if not torch.equal(decoded[i, :n + 1], labels[i, :n + 1])]
    assert not wrong, (f"greedy decoding got {len(wrong)} / {len(lengths)} sequences wrong (loss {losses[-1]:.4f}); "
                       f"first: expected {labels[wrong[0]].tolist()}, got {decoded[wrong[0]].tolist()}")


@given(batch=model_batches(min_len=2, min_d_ff=16, min_d_model=4), seed=st.integers(0, 2**31 - 1))
def test_transformer_every_parameter_gets_a_gradient(impl, device: str, batch: ModelBatch, seed: int) -> None:
    """One cross-entropy step on a random batch: every parameter's gradient exists, is finite and is nonzero
    somewhere (but for a key-projection bias, whose exact gradient is zero). No padding and lengths >= 2 (a single visible key makes w_q, w_k irrelevant); d_model >= 4 (a
    LayerNorm over 1 feature outputs its bias whatever comes in, over 2 it outputs +-alpha)."""
    note({**batch.describe(), "seed": seed})
    torch.manual_seed(seed)
    model = build_model(impl, replace(batch.cfg, dropout=0.0), device=device).train()
    src, tgt = torch.as_tensor(batch.src, device=device), torch.as_tensor(batch.tgt, device=device)
    Lt = tgt.shape[1]
    tgt_mask = torch.tril(torch.ones(1, Lt, Lt, dtype=torch.bool, device=device))
    logits = model.project(model.decode(model.encode(src, None), None, tgt, tgt_mask))
    labels = torch.as_tensor(batch.tgt_alt, device=device)
    F.cross_entropy(logits.reshape(-1, batch.cfg.tgt_vocab_size), labels.reshape(-1)).backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"no gradient reached: {no_grad}"
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p.grad).all())]
    assert not bad, f"non-finite gradients: {bad}"
    # A key-projection bias (legal: nn.Linear's default) has an exactly zero gradient in exact arithmetic: it adds
    # q_i . b_k to every score of row i, which softmax ignores. Its gradient is rounding noise, zero or not.
    zero = [name for name, p in model.named_parameters()
            if not bool((p.grad != 0).any()) and not name.endswith("w_k.bias")]
    assert not zero, f"all-zero gradients: {zero}"
