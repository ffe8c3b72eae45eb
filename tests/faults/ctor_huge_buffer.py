"""Fault: ``PositionalEncoding`` builds its table for 10**10 positions whatever ``seq_len`` is: the first tensor of
the table (``arange``, float64) alone is 80 GB. On a machine with less memory the allocation is refused at once
(``RuntimeError: ... can't allocate memory``), before any page is touched; it must never eat the machine's memory."""

from tests.negative_controls._base import install

install(globals(), [
    ("model.py", "return sinusoid_table(self.seq_len, self.d_model)", "return sinusoid_table(10**10, self.d_model)"),
])
