"""The equivalence report: ``python -m reference.report`` (console script ``scratch-transformer-report``).

For the implementation under test (``--impl``, default ``scratch_transformer``) it sweeps every contract component
over a few small configurations, on each device and dtype, against the float64 NumPy oracle (``numpy_ref``) and
PyTorch's own modules loaded with the same weights (``torch_adapters``), and prints one row per
component x (device, dtype): max abs / max rel error, the implementation's error over torch's own, the tolerance,
PASS/FAIL. The full model is also localised (``reference.report.localize``): the first contract submodule that leaves
tolerance is named by its dotted path. Exit status: 0 all PASS, 1 any FAIL, 2 usage error. Every FAIL row prints
the command that reproduces it. ``--json FILE`` writes the same data (schema in ``docs/report.md``);
``--plots DIR`` draws PNGs (``reference.report.plots``, needs matplotlib).

Tolerances (``reference.judge.tolerances``): float64 rows, the embedding and the positional table use the direct rule
(``VALUE_TOL``/``GRAD_TOL``); float32 and lower use the error-ratio rule against torch's own error on the same
inputs. Every parameter is set to a random non-default value (``randomize_parameters_``), norm gains and biases too.
Hyper-parameters come from the sweep's configuration (``h``) and the contract (``eps`` = ``CONTRACT_EPS``: no norm
is built with another), never from the modules under test.
Shapes: B batch, L / Lq / Lk lengths, d = d_model.

The package: ``cases`` (configurations, the run context and its seeded generator, outcomes), ``forward`` and
``gradients`` (one runner per row), ``sweep`` (the row table, results, JSON, card), ``render`` (console), ``cli``,
``plots``. Rows and their clauses come from the component registry (``reference.kit.components``).
"""

from .cases import CONFIGS, Config, Ctx, Outcome, case_seed
from .cli import main, parse_args
from .render import render
from .sweep import (COMPONENTS, DTYPES, SCHEMA, Report, Result, available_devices, default_dtypes, run_one,
                    select_components, sweep)

__all__ = ["CONFIGS", "COMPONENTS", "DTYPES", "SCHEMA", "Config", "Ctx", "Outcome", "Report", "Result",
           "available_devices", "case_seed", "default_dtypes", "main", "parse_args", "render", "run_one",
           "select_components", "sweep"]
