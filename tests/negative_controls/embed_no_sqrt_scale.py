"""InputEmbeddings returns embedding(x) without the * sqrt(d_model) scale."""

from tests.negative_controls._base import install

BUG = "InputEmbeddings returns embedding(x) without the * sqrt(d_model) scale"
COMPONENT = "embeddings"
CLAUSES = ("embed.scaled-lookup",)

install(globals(), [
    ("model.py", "return self.embedding(x) * math.sqrt(self.d_model)", "return self.embedding(x)"),
])
