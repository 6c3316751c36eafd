"""gateflow: exact, fast gradient flow through recurrent cells.

The package is layered; each layer owns its facts and imports only the layers below it
(enforced by import-linter, see ``ARCHITECTURE.md``)::

    cli            the Typer command line: parses options, calls a job
    jobs           decay, report, sweep: orchestration only
    presentation   figures, console tables and progress, report rendering
    analysis       fits (decay factor, e-folding lag, memory horizon) and theory
    models         parameters, inputs, weight-file formats
    numeric        backends, compiled evaluators, the all-lag sweep and its observers
    symbolic       exact structured Jacobians (SymPy) and their printing
    cells          the Cell record and the declared cells (equations as data)
    base           _errors, _validate, _io, _memory, _version

Jacobian layout everywhere: rows = outputs, (∂s_t/∂s_{t−1})[a, b] = ∂s_t[a]/∂s_{t−1}[b].
"""

from importlib import import_module
from typing import TYPE_CHECKING

from gateflow._errors import GateflowError
from gateflow._version import __version__

# Public names, and the module that owns each. They load on first use (einops-style), so
# `import gateflow` is instant and the numeric path never imports SymPy unless it derives.
_EXPORTS = {
    "Cell": "cells._record", "TorchLayout": "models.formats._pytorch",
    "CELLS": "cells._library", "get_cell": "cells._library", "stack": "cells._stack",
    "LinOp": "symbolic._derive", "Structure": "symbolic._derive", "Term": "symbolic._derive",
    "derive": "symbolic._derive", "derive_input": "symbolic._derive",
    "render": "symbolic._printing",
    "ChainResult": "numeric._chain", "all_lags": "numeric._chain",
    "LyapunovResult": "numeric._lyapunov", "lyapunov": "numeric._lyapunov",
    "kaplan_yorke": "numeric._lyapunov",
    "init_params": "models._params", "load_params": "models._params",
    "save_params": "models._params", "to_torch_state_dict": "models.formats._pytorch",
    "from_torch_state_dict": "models.formats._pytorch",
    "make_inputs": "models._inputs", "load_inputs": "models._inputs",
    "load_model": "models._model", "find_models": "models._model",
    "load_initial_state": "models._model",
    "capture": "models._capture",
    "DecayFit": "analysis._analysis", "fit_decay": "analysis._analysis",
    "gate_path": "analysis._analysis", "mean_field_tanh": "analysis._analysis",
    "pascanu_bound": "analysis._analysis", "summarize": "analysis._analysis",
    "memory_horizon": "analysis._analysis",
    # the jobs' pipeline and the figures, for notebooks and scripts
    "fit_batch": "analysis._analysis",
    "Overlay": "presentation._plot", "plot_decay": "presentation._plot",
    "plot_input_sensitivity": "presentation._plot",
    "direct_label": "presentation._labels",
    "DecayResult": "jobs._contract", "decay": "jobs._decay",
    "ReportConfig": "jobs._report", "write_report": "jobs._report",
    "SweepGrid": "jobs._sweep", "sweep": "jobs._sweep",
    "analyze": "jobs._analyze",
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
    from gateflow.analysis._analysis import (  # noqa: F401
        DecayFit,
        fit_batch,
        fit_decay,
        gate_path,
        mean_field_tanh,
        memory_horizon,
        pascanu_bound,
        summarize,
    )
    from gateflow.cells._library import CELLS, get_cell  # noqa: F401
    from gateflow.cells._record import Cell  # noqa: F401
    from gateflow.cells._stack import stack  # noqa: F401
    from gateflow.jobs._analyze import analyze  # noqa: F401
    from gateflow.jobs._contract import DecayResult  # noqa: F401
    from gateflow.jobs._decay import decay  # noqa: F401
    from gateflow.jobs._report import ReportConfig, write_report  # noqa: F401
    from gateflow.jobs._sweep import SweepGrid, sweep  # noqa: F401
    from gateflow.models._capture import capture  # noqa: F401
    from gateflow.models._inputs import load_inputs, make_inputs  # noqa: F401
    from gateflow.models._model import find_models, load_initial_state, load_model  # noqa: F401
    from gateflow.models._params import init_params, load_params, save_params  # noqa: F401
    from gateflow.models.formats._pytorch import (  # noqa: F401
        TorchLayout,
        from_torch_state_dict,
        to_torch_state_dict,
    )
    from gateflow.numeric._chain import ChainResult, all_lags  # noqa: F401
    from gateflow.numeric._lyapunov import LyapunovResult, kaplan_yorke, lyapunov  # noqa: F401
    from gateflow.presentation._labels import direct_label  # noqa: F401
    from gateflow.presentation._plot import (  # noqa: F401
        Overlay,
        plot_decay,
        plot_input_sensitivity,
    )
    from gateflow.symbolic._derive import (  # noqa: F401
        LinOp,
        Structure,
        Term,
        derive,
        derive_input,
    )
    from gateflow.symbolic._printing import render  # noqa: F401

__all__ = [  # noqa: F822 - resolved lazily by __getattr__
    "CELLS",
    "Cell",
    "ChainResult",
    "DecayFit",
    "DecayResult",
    "GateflowError",
    "LinOp",
    "LyapunovResult",
    "Overlay",
    "ReportConfig",
    "Structure",
    "SweepGrid",
    "Term",
    "TorchLayout",
    "all_lags",
    "analyze",
    "capture",
    "decay",
    "derive",
    "derive_input",
    "direct_label",
    "find_models",
    "fit_batch",
    "fit_decay",
    "from_torch_state_dict",
    "gate_path",
    "get_cell",
    "init_params",
    "kaplan_yorke",
    "load_initial_state",
    "load_inputs",
    "load_model",
    "load_params",
    "lyapunov",
    "make_inputs",
    "mean_field_tanh",
    "memory_horizon",
    "pascanu_bound",
    "plot_decay",
    "plot_input_sensitivity",
    "render",
    "save_params",
    "stack",
    "summarize",
    "sweep",
    "to_torch_state_dict",
    "write_report",
    "__version__",
]
