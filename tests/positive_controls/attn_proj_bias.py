"""Attention projections with biases: ``nn.Linear(d_model, d_model)`` (bias=True, the default, as
``nn.MultiheadAttention`` has), the biases drawn from U(-0.5, 0.5) by ``build_transformer`` so they matter."""

from tests.negative_controls._base import install

VARIANT = "w_q/w_k/w_v/w_o are nn.Linear with bias=True (the default); build_transformer draws the biases U(-0.5, 0.5)"
COMPONENT = "attention projections"

install(globals(), [
    ("model.py", "nn.Linear(d_model, d_model, bias=False, device=device, dtype=dtype)",
     "nn.Linear(d_model, d_model, device=device, dtype=dtype)", 4),
    ("model.py", "            nn.init.xavier_uniform_(p)\n    return transformer\n",
     "            nn.init.xavier_uniform_(p)\n"
     "    for name, p in transformer.named_parameters():\n"
     "        if name.endswith((\"w_q.bias\", \"w_k.bias\", \"w_v.bias\", \"w_o.bias\")):\n"
     "            nn.init.uniform_(p, -0.5, 0.5)  # non-zero, so a reference that ignores them is caught\n"
     "    return transformer\n"),
])
