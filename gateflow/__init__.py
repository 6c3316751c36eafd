"""gateflow: exact, fast gradient flow through recurrent cells.

Layers, each owning one thing (a newcomer can point at the file for every arrow)::

    cells.py        the cells, as equations (data)
    _derive.py      exact structured one-step Jacobians, symbolic n
    _printing.py    text / LaTeX / Markdown rendering
    _compile.py     lambdified NumPy/CuPy evaluators
    _chain.py       forward pass and all-lag Jacobian chains
    ...             analysis, plots, reports (later layers); cli.py calls them

Jacobian layout everywhere: rows = outputs, (∂s_t/∂s_{t−1})[a, b] = ∂s_t[a]/∂s_{t−1}[b].
"""

from ._cell import Cell, TorchLayout
from ._derive import LinOp, Structure, Term, derive
from ._errors import GateflowError
from .cells import CELLS, get_cell

__version__ = "0.1.0"

__all__ = [
    "CELLS",
    "Cell",
    "GateflowError",
    "LinOp",
    "Structure",
    "Term",
    "TorchLayout",
    "derive",
    "get_cell",
    "__version__",
]
