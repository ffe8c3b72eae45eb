"""Attention softmax over the query axis (dim=-2) instead of the keys."""

from tests.negative_controls._base import install

BUG = "attention softmax over the query axis (dim=-2) instead of the keys"
COMPONENT = "attention softmax"
# A softmax over the queries also gives masked keys weight (a masked key's column is normalised over the queries, so
# it gets 1/Lq where every query masks it): masking keys no longer equals removing them, a true mask.zero-weight
# violation that test_attention_masking_keys_equals_removing_them finds on its own evidence.
CLAUSES = ("mha.formula", "mha.static-attention", "mask.zero-weight")

install(globals(), [
    ("model.py", "softmax(dim=-1)", "softmax(dim=-2)", 2),
])
