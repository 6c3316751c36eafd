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

from importlib import import_module
from typing import TYPE_CHECKING

from ._errors import GateflowError

# Public names, and the module that owns each. They load on first use (einops-style), so
# `import gateflow` is instant and the numeric path never imports SymPy unless it derives.
_EXPORTS = {
    "Cell": "_cell", "TorchLayout": "_cell",
    "CELLS": "cells", "get_cell": "cells",
    "LinOp": "_derive", "Structure": "_derive", "Term": "_derive", "derive": "_derive",
    "render": "_printing",
    "ChainResult": "_chain", "all_lags": "_chain",
    "init_params": "_params", "load_params": "_params", "save_params": "_params",
    "to_torch_state_dict": "_params", "make_inputs": "_params", "load_inputs": "_params",
    "DecayFit": "_analysis", "fit_decay": "_analysis", "gate_path": "_analysis",
    "mean_field_tanh": "_analysis", "pascanu_bound": "_analysis", "summarize": "_analysis",
    "memory_horizon": "_analysis",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gateflow' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from ._analysis import DecayFit, fit_decay, gate_path, mean_field_tanh, pascanu_bound, summarize  # noqa: F401
    from ._cell import Cell, TorchLayout  # noqa: F401
    from ._chain import ChainResult, all_lags  # noqa: F401
    from ._derive import LinOp, Structure, Term, derive  # noqa: F401
    from ._params import (  # noqa: F401
        init_params,
        load_inputs,
        load_params,
        make_inputs,
        save_params,
        to_torch_state_dict,
    )
    from ._printing import render  # noqa: F401
    from .cells import CELLS, get_cell  # noqa: F401

__version__ = "0.1.0"

__all__ = [  # noqa: F822 - resolved lazily by __getattr__
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
    "memory_horizon",
    "pascanu_bound",
    "render",
    "save_params",
    "summarize",
    "to_torch_state_dict",
    "__version__",
]
