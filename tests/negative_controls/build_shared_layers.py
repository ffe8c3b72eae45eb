"""Build_transformer repeats one encoder block N times ([block] * N): shared weights."""

from tests.negative_controls._base import install

BUG = "build_transformer repeats one encoder block N times ([block] * N): shared weights"
COMPONENT = "encoder wiring"
CLAUSES = ("build.structure",)

install(globals(), [
    ("model.py", "nn.ModuleList(encoder_blocks)", "nn.ModuleList(encoder_blocks[:1] * N)"),
])
