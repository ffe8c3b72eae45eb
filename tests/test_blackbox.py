"""Black-box properties: what any model must do, reached through ``build_transformer`` and the Transformer's
``encode``/``decode``/``project`` only (no weight, no attribute name). They run even when an API deviation that
nothing maps stops every other test (``@pytest.mark.blackbox``; docs/guide.md, "Your names are not the blog's?"), so a
half-mappable model still gets verdicts. The other black-box tests live with their topic: causality and padding
(``test_masking``), batch independence (``test_invariances``), eval determinism, seeds and state
(``test_dropout_state``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, note

from reference.oracles import numpy_ref
from reference.judge.compare import assert_close
from reference.spec.contract import ModelConfig, build_model
from tests.strategies import ModelBatch, model_batches

pytestmark = pytest.mark.blackbox


def _logits(model: torch.nn.Module, batch: ModelBatch, device: str) -> torch.Tensor:
    src, tgt = torch.as_tensor(batch.src, device=device), torch.as_tensor(batch.tgt, device=device)
    Lt = tgt.shape[1]
    tgt_mask = torch.tril(torch.ones(1, Lt, Lt, dtype=torch.bool, device=device))
    with torch.no_grad():
        memory = model.encode(src, None)
        assert memory.shape == (*src.shape, batch.cfg.d_model), f"encode returned {tuple(memory.shape)}"
        decoded = model.decode(memory, None, tgt, tgt_mask)
        assert decoded.shape == (*tgt.shape, batch.cfg.d_model), f"decode returned {tuple(decoded.shape)}"
        return model.project(decoded)


@pytest.mark.clause("transformer.compose", "projection.logits")
@given(batch=model_batches())
def test_encode_decode_project_shapes(impl, device: str, batch: ModelBatch) -> None:
    """encode: Long[B, Ls] -> [B, Ls, d]; decode -> [B, Lt, d]; project -> [B, Lt, tgt_vocab], all finite."""
    note(batch.describe())
    logits = _logits(build_model(impl, batch.cfg, device=device).eval(), batch, device)
    assert logits.shape == (*batch.tgt.shape, batch.cfg.tgt_vocab_size), f"project returned {tuple(logits.shape)}"
    assert bool(torch.isfinite(logits).all()), "non-finite logits"


@pytest.mark.clause("projection.logits")
@given(batch=model_batches())
def test_logits_are_not_normalised(impl, device: str, batch: ModelBatch) -> None:
    """``project`` returns raw logits: neither log-probabilities (every row's logsumexp 0) nor probabilities (every
    row in [0, 1] summing to 1). With two or more classes, random weights never give either on every row."""
    assume(batch.cfg.tgt_vocab_size >= 2)
    note(batch.describe())
    logits = _logits(build_model(impl, batch.cfg, device=device).eval(), batch, device).double()
    lse = logits.logsumexp(-1)
    assert not bool((lse.abs() < 1e-6).all()), "project returns log-probabilities (a log_softmax), not logits"
    probabilities = bool(((logits >= 0) & (logits <= 1)).all()) and bool(((logits.sum(-1) - 1).abs() < 1e-6).all())
    assert not probabilities, "project returns probabilities (a softmax), not logits"


@pytest.mark.clause("pe.formula")
@pytest.mark.parametrize("d_model", [12, 13])
def test_positional_table_found_by_its_shape_matches_the_formula(impl, device: str, d_model: int) -> None:
    """Every buffer shaped like a positional table ([1, L, d] or [L, d], L the source or target length) equals the
    paper's formula to float32 rounding: the table is found by its shape alone, whatever its name."""
    cfg = ModelConfig(src_seq_len=17, tgt_seq_len=19, d_model=d_model, N=1, h=1, d_ff=8)
    model = build_model(impl, cfg, device=device)
    tables = [(name, b) for name, b in model.named_buffers()
              if b.dim() in (2, 3) and tuple(b.shape[-2:]) in ((17, d_model), (19, d_model))
              and (b.dim() == 2 or b.shape[0] == 1)]
    if not tables:
        pytest.skip(f"no buffer shaped like a positional table ([1, L, {d_model}]) in the model")
    for name, table in tables:
        expected = numpy_ref.positional_encoding_table(table.shape[-2], d_model)
        assert_close(table.reshape(expected.shape), np.asarray(expected), component=f"positional table `{name}`",
                     config={"d_model": d_model, "seq_len": table.shape[-2]}, dtype=torch.float32)
