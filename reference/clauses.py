"""The contract's clauses, each with a short id, and the two tiers tests are judged in.

* **contract** clauses restate the README's contract: every correct implementation passes their tests, however it
  is written (the positive controls in ``tests/positive_controls`` prove it). A conformance test names the clause(s)
  it checks with ``@pytest.mark.clause("id", ...)``.
* **strict** clauses are this package's own choices beyond the contract (zeros on fully masked rows, the table
  rebuilt on a dtype change, the bad-input errors, one compiled graph). Their tests carry
  ``@pytest.mark.strict`` too; they always run for ``scratch_transformer`` and, for any other ``--impl``, are
  skipped as "beyond the contract" unless ``--strict`` is given.
* **extra** clauses are the optional extras of the contract (``device=``/``dtype=`` keywords, mask helpers,
  ``Transformer.forward``): an implementation without one skips its tests with a reason naming it.
* **kit** is not a clause of the implementation: tests of the suite's own machinery (oracles, adapters, report,
  localiser, controls) that happen to run on the implementation under test.

``python -m reference.clauses --write`` regenerates the README's clause table (clause, tier, what, tests) from the
markers; ``tests/test_clauses.py`` fails when a test names no clause or an unknown one, when a strict test and its
clauses disagree, when a clause has no test, or when the README's table is stale.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTRACT, STRICT, EXTRA, KIT = "contract", "strict", "extra", "kit"


@dataclass(frozen=True)
class Clause:
    id: str
    tier: str
    text: str


_CLAUSES = [
    # ---------------------------------------------------------------- API
    Clause("api.names", CONTRACT, "the module exports the blog's class names and `build_transformer`"),
    Clause("api.signatures", CONTRACT, "constructor arguments in the blog's order and names"),
    Clause("api.attributes", CONTRACT, "submodule, parameter and buffer names and shapes of the contract table"),
    # ---------------------------------------------------------------- components
    Clause("embed.scaled-lookup", CONTRACT, "`InputEmbeddings`: `embedding(x) * sqrt(d_model)`, Long[B, L] -> [B, L, d]"),
    Clause("pe.formula", CONTRACT, "`pe[pos, 2i] = sin(pos / 10000^(2i/d))`, `pe[pos, 2i+1] = cos(...)`, computed in "
           "float64 and cast once to the module dtype (accurate to that dtype's rounding)"),
    Clause("pe.buffer", CONTRACT, "`pe` is a persistent buffer [1, seq_len, d] that moves and casts with the module"),
    Clause("pe.add", CONTRACT, "`PositionalEncoding`: `dropout(x + pe[:, :L])`"),
    Clause("ln.biased-variance", CONTRACT, "`alpha * (x - mean) / sqrt(var + eps) + bias`, biased variance, per-feature "
           "`alpha`/`bias`, `eps` inside the root"),
    Clause("ln.per-feature-affine", CONTRACT, "`LayerNormalization`'s `alpha` and `bias` are parameters of shape "
           "[features] (a scalar gain is a deviation)"),
    Clause("ffn.formula", CONTRACT, "`linear_2(dropout(relu(linear_1(x))))`"),
    Clause("mha.formula", CONTRACT, "`Concat(heads) W_o`, `head_i = softmax(q_i k_i^T / sqrt(d_k)) v_i`, projections "
           "`w_q`/`w_k`/`w_v`/`w_o` (`nn.Linear`, with or without bias: a bias is judged with it), heads are "
           "contiguous d_k slices of the projections"),
    Clause("mha.static-attention", CONTRACT, "static `attention(query, key, value, mask, dropout) -> (out, weights)`; "
           "the block keeps the weights in `attention_scores`"),
    Clause("residual.pre-norm", CONTRACT, "`ResidualConnection`: `x + dropout(sublayer(norm(x)))`"),
    Clause("encoder.block", CONTRACT, "`EncoderBlock`: self-attention then feed-forward, each in a residual"),
    Clause("encoder.stack", CONTRACT, "`Encoder`: the layers in order, then `norm`"),
    Clause("decoder.block", CONTRACT, "`DecoderBlock`: masked self-attention, cross-attention over the encoder output, "
           "feed-forward, each in a residual"),
    Clause("decoder.stack", CONTRACT, "`Decoder`: the layers in order, then `norm`"),
    Clause("projection.logits", CONTRACT, "`ProjectionLayer`: logits [B, L, vocab], no softmax"),
    Clause("transformer.compose", CONTRACT, "`Transformer`: `encode`, `decode`, `project` compose the parts"),
    Clause("build.structure", CONTRACT, "`build_transformer`: the paper's base model by default, N layers of each "
           "kind, parameter count of the closed form"),
    Clause("build.xavier", CONTRACT, "`build_transformer`: Xavier-uniform on every matrix; norms at ones/zeros"),
    # ---------------------------------------------------------------- masks
    Clause("mask.semantics", CONTRACT, "a mask is None or a bool/integer tensor broadcastable to [B, h, Lq, Lk], "
           "nonzero = may attend; every accepted form of one mask gives the same result"),
    Clause("mask.zero-weight", CONTRACT, "a masked key gets exactly zero weight (so no value, and no gradient, flows "
           "from it); causal and padding masks make the model causal and padding-invariant"),
    Clause("mask.fully-masked-finite", CONTRACT, "a query row with every key masked returns finite values (any finite "
           "values), in every dtype"),
    # ---------------------------------------------------------------- numerics and module behaviour
    Clause("numerics.float64", CONTRACT, "float64 results within the conditioning bound of a backward-stable float64 "
           "computation (values and gradients)"),
    Clause("numerics.float32", CONTRACT, "float32 results within the conditioning bound of a backward-stable float32 "
           "computation, or within K times PyTorch's own float32 error (values and gradients)"),
    Clause("numerics.low-precision", CONTRACT, "float16/bfloat16 (and autocast) results within K times PyTorch's own "
           "error in that dtype"),
    Clause("dropout.semantics", CONTRACT, "dropout zeroes a binomial fraction p and scales survivors by 1/(1-p) in "
           "train mode, is the identity in eval mode, and follows `torch.manual_seed`"),
    Clause("module.state", CONTRACT, "`state_dict` round trips, `.to(device/dtype)` moves every parameter and buffer"),
    Clause("module.compile", CONTRACT, "the modules run under `torch.compile` as accurately as in eager mode"),
    Clause("model.learns", CONTRACT, "every parameter gets a gradient; the model can fit a toy copy task"),
    # ---------------------------------------------------------------- optional extras
    Clause("extra.factory-kwargs", EXTRA, "every constructor takes keyword-only `device=None, dtype=None`"),
    Clause("extra.mask-helpers", EXTRA, "`causal_mask(size) -> Bool[1, size, size]`, `padding_mask(tokens, pad_id) "
           "-> Bool[B, 1, 1, L]`"),
    Clause("extra.forward", EXTRA, "`Transformer.forward(src, tgt, src_mask=None, tgt_mask=None)`"),
    # ---------------------------------------------------------------- strict: this package's own choices
    Clause("strict.fully-masked-zero", STRICT, "a fully masked query row has all-zero weights (so a zero output and "
           "no gradient into any key)"),
    Clause("strict.pe-rebuilt", STRICT, "`.double()`/`.to(dtype)` rebuild `pe` from the float64 formula instead of "
           "casting the old table"),
    Clause("strict.bad-inputs", STRICT, "bad constructor arguments and inputs raise a specific error early"),
    Clause("strict.dtype-kept", STRICT, "every output of a module, and the weights in `attention_scores`, are in the "
           "input's dtype (16-bit work done in float32 internally is cast back)"),
    Clause("strict.any-leading-shape", STRICT, "`LayerNormalization`, `FeedForwardBlock` and `ProjectionLayer` act on "
           "the last dim of any `[..., d]` input, as `nn.LayerNorm`/`nn.Linear` do"),
    Clause("strict.ln-offset-accurate", STRICT, "float32 `LayerNormalization` is accurate to a few roundings of its "
           "output whatever the rows' offsets (a corrected two-pass mean): within 64 units of float32 roundoff of the "
           "float64 formula on the same float32 input, where the contract allows the conditioning bound"),
    Clause("strict.no-projection-bias", STRICT, "`w_q`/`w_k`/`w_v`/`w_o` have no bias (the contract allows one: "
           "the oracles and torch references take it)"),
    Clause("strict.one-graph", STRICT, "each module compiles to one graph without breaks"),
    # ---------------------------------------------------------------- the kit itself
    Clause("kit", KIT, "the suite's own machinery (oracles, torch adapters, report, localiser, controls)"),
]

CLAUSES: dict[str, Clause] = {c.id: c for c in _CLAUSES}


def tier(clause_id: str) -> str:
    """The tier of a clause id (``KeyError`` for an unknown id)."""
    return CLAUSES[clause_id].tier


def readme_table(by_clause: dict[str, list[str]]) -> str:
    """The README's clause table: clause, tier, what it says, and the tests that check it."""
    lines = ["| clause | tier | what | tests |", "|---|---|---|---|"]
    for clause in _CLAUSES:
        tests = by_clause.get(clause.id, [])
        lines.append(f"| `{clause.id}` | {clause.tier} | {clause.text} | {len(tests)}: "
                     + (", ".join(f"`{t}`" for t in tests) if tests else "—") + " |")
    return "\n".join(lines)


README = "README.md"
TABLE_START, TABLE_END = "<!-- clause-table:start -->", "<!-- clause-table:end -->"


def collect(root: str = ".") -> dict[str, list[str]]:
    """Collect the suite (``pytest --collect-only`` in a subprocess) and return, per test function
    (``module::name``), its clause ids and whether it carries the ``strict`` marker (as the id ``@strict``)."""
    import json
    import subprocess
    import sys

    # The root conftest builds the clause map while it collects (tests.COLLECTED_CLAUSES); this only reads it.
    code = ("import json, pytest\n"
            "from tests import COLLECTED_CLAUSES\n"
            "class P:\n"
            "    def pytest_collection_finish(self, session): self.out = session.config.stash[COLLECTED_CLAUSES]\n"
            "p = P()\n"
            "pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', '--device', 'all'], plugins=[p])\n"
            "print('@@' + json.dumps(p.out))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env=env).stdout
    return json.loads(out.split("@@", 1)[1])


def tests_by_clause(tests: dict[str, list[str]]) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for test, ids in sorted(tests.items()):
        for c in ids:
            if not c.startswith("@"):
                by.setdefault(c, []).append(test)
    return by


def readme_block(tests: dict[str, list[str]]) -> str:
    """The README's generated table, between its markers."""
    return f"{TABLE_START}\n{readme_table(tests_by_clause(tests))}\n{TABLE_END}"


def main(argv: list[str] | None = None) -> int:
    """``python -m reference.clauses [--write]``: print the README's clause table, or rewrite it in place."""
    import re
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    block = readme_block(collect())
    if "--write" in args:
        path = Path(README)
        text = path.read_text()
        pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
        if not pattern.search(text):
            raise SystemExit(f"{README} has no {TABLE_START} ... {TABLE_END} block")
        path.write_text(pattern.sub(lambda _: block, text))
        print(f"wrote the clause table of {README}")
    else:
        print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
