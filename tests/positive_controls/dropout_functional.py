"""Every dropout an ``F.dropout`` call: the contract's ``dropout`` attributes are kept (``nn.Dropout(p)``, never
called), and each forward calls ``torch.nn.functional.dropout(x, self.dropout.p, self.training)`` at the contract's
site (the attention passes a function as the static attention's ``dropout``)."""

from tests.negative_controls._base import install

VARIANT = "dropout by F.dropout(x, p, self.training) calls at every site; the nn.Dropout attributes are kept, unused"
COMPONENT = "dropout"

install(globals(), [
    ("model.py", "import torch\nfrom torch import nn\n", "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"),
    ("model.py", "return self.dropout(x + self.pe[:, :length])",
     "return F.dropout(x + self.pe[:, :length], self.dropout.p, self.training)"),
    ("model.py", "return self.linear_2(self.dropout(_relu(self.linear_1(x))))",
     "return self.linear_2(F.dropout(_relu(self.linear_1(x)), self.dropout.p, self.training))"),
    ("model.py", "MultiHeadAttentionBlock.attention(query, key, value, mask, self.dropout)",
     "MultiHeadAttentionBlock.attention(\n            query, key, value, mask, lambda w: F.dropout(w, self.dropout.p, self.training))"),
    ("model.py", "return x + self.dropout(sublayer(self.norm(x)))",
     "return x + F.dropout(sublayer(self.norm(x)), self.dropout.p, self.training)"),
])
