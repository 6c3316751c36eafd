"""gateflow: exact, fast gradient flow through recurrent cells.

Layers, each owning one thing (one file per arrow)::

    cells.py       the cells, as equations (data): rnn, lstm, gru, gru-cho, …
    _cell.py       the Cell record: parsing and validation of equations
    _derive.py     exact structured one-step Jacobians, for symbolic n
    _printing.py   text / LaTeX / Markdown rendering of equations and Jacobians
    _compile.py    lambdified NumPy/CuPy evaluators (forward step, coefficients)
    _chain.py      forward pass and the all-lag Jacobian chain (norms, spectra, probes)
    _params.py     parameters: initialisation, PyTorch/safetensors/npz loading, inputs
    _analysis.py   fits (decay factor, e-folding lag, memory horizon) and theory
    _decay.py      the `decay` job and its JSON/CSV contract
    _plot.py, _report.py, _sweep.py   figures, the report, dask sweeps
    cli.py         the Typer CLI: parses options and calls the layers above

Jacobian layout everywhere: rows = outputs, (∂s_t/∂s_{t−1})[a, b] = ∂s_t[a]/∂s_{t−1}[b].
"""

from ._analysis import DecayFit, fit_decay, gate_path, mean_field_tanh, pascanu_bound, summarize
from ._cell import Cell, TorchLayout
from ._chain import ChainResult, all_lags
from ._derive import LinOp, Structure, Term, derive
from ._errors import GateflowError
from ._params import (
    init_params,
    load_inputs,
    load_params,
    make_inputs,
    save_params,
    to_torch_state_dict,
)
from ._printing import render
from .cells import CELLS, get_cell

__version__ = "0.1.0"

__all__ = [
    "CELLS",
    "Cell",
    "ChainResult",
    "DecayFit",
    "GateflowError",
    "LinOp",
    "Structure",
    "Term",
    "TorchLayout",
    "all_lags",
    "derive",
    "fit_decay",
    "gate_path",
    "get_cell",
    "init_params",
    "load_inputs",
    "load_params",
    "make_inputs",
    "mean_field_tanh",
    "pascanu_bound",
    "render",
    "save_params",
    "summarize",
    "to_torch_state_dict",
    "__version__",
]
