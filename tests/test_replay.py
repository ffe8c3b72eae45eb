"""The dropout recorder and replayer (``reference.kit.replay``) on their own: what train mode's exact judgement
rests on (tests/test_train_mode.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference.kit.replay import DropoutRecorder, DropoutReplayer
from reference.oracles.replay import DropoutSiteError

pytestmark = pytest.mark.clause("kit")


def test_the_recorder_sees_every_way_to_draw_a_dropout_and_restores_torch() -> None:
    """nn.Dropout, F.dropout, torch.dropout and SDPA's dropout_p at top level, and the dropout torch's own
    nn.MultiheadAttention draws inside ``F.multi_head_attention_forward`` (with the mode set aside); eval mode and
    p = 0 draw nothing; ``torch.nn.functional`` is restored after the block."""
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    mha = nn.MultiheadAttention(4, 2, dropout=0.5, batch_first=True, dtype=torch.float64).train()
    original = (F.dropout, F.scaled_dot_product_attention)
    with DropoutRecorder(0) as rec:
        nn.Dropout(0.1).train()(x)
        F.dropout(x, 0.2)
        torch.dropout(x, 0.3, True)
        F.scaled_dot_product_attention(x[:, None], x[:, None], x[:, None], dropout_p=0.4)
        mha(x, x, x, need_weights=False)
        mha(x, x, x, need_weights=True)
        nn.Dropout(0.1).eval()(x)
        F.dropout(x, 0.0)
    assert [(d.via, d.p, d.shape) for d in rec.drawn] == [
        ("F.dropout", 0.1, (2, 3, 4)), ("F.dropout", 0.2, (2, 3, 4)), ("torch.dropout", 0.3, (2, 3, 4)),
        ("scaled_dot_product_attention", 0.4, (2, 1, 3, 3)), ("scaled_dot_product_attention", 0.5, (2, 2, 3, 3)),
        ("F.dropout", 0.5, (4, 3, 3))]  # torch's own weights keep batch and heads in one dimension
    assert (F.dropout, F.scaled_dot_product_attention) == original


def test_the_replayer_applies_the_recorded_masks_and_names_a_mismatch() -> None:
    """The same masks again (also onto torch's [B * h, Lq, Lk] for a recorded [B, h, Lq, Lk]); a dropout on a tensor
    of another shape, one too many, or a recorded mask left over: DropoutSiteError."""
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    with DropoutRecorder(1) as rec:
        first = F.dropout(x, 0.5)
        weights = F.dropout(torch.ones(2, 2, 3, 3, dtype=torch.float64), 0.5)
    with DropoutReplayer(rec.drawn, "here"):
        again = F.dropout(x, 0.5)
        merged = F.dropout(torch.ones(4, 3, 3, dtype=torch.float64), 0.5)
    assert torch.equal(first, again) and torch.equal(merged, weights.reshape(4, 3, 3))
    with pytest.raises(DropoutSiteError, match=r"shape \[2, 3, 5\]"):
        with DropoutReplayer(rec.drawn, "here"):
            F.dropout(torch.ones(2, 3, 5), 0.5)
    with pytest.raises(DropoutSiteError, match="beyond the 2"):
        with DropoutReplayer(rec.drawn, "here"):
            F.dropout(x, 0.5), F.dropout(weights, 0.5), F.dropout(x, 0.5)
    with pytest.raises(DropoutSiteError, match="1 of the implementation's 2 dropouts have no counterpart"):
        with DropoutReplayer(rec.drawn, "here"):
            F.dropout(x, 0.5)
    assert F.dropout is not None and F.dropout.__module__ == "torch.nn.functional"
