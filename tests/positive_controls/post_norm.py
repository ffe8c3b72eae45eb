"""The paper's post-norm residual ``norm(x + dropout(sublayer(x)))``, declared: correct under ``--variant post-norm``.

The same patch as the negative control ``residual_post_norm`` (which breaks ``residual.pre-norm`` under the default
variant), here with ``DECLARED_VARIANT``: the kit's runners of positive controls (the kill matrix, the meta-tests in
``tests/test_positive_controls.py``, ``_cards``) pass ``--variant post-norm`` for it
(``tests.positive_controls.variant_args``), and it must then pass everything, ``residual.post-norm`` included.
"""

from tests.negative_controls._base import install

VARIANT = "post-norm residual norm(x + dropout(sublayer(x))), run with --variant post-norm"
COMPONENT = "residual order"
#: The variant this control declares (``reference.spec.variants``): its runs pass ``--variant post-norm``.
DECLARED_VARIANT = "post-norm"

install(globals(), [
    ("model.py", "return x + self.dropout(sublayer(self.norm(x)))", "return self.norm(x + self.dropout(sublayer(x)))"),
])
