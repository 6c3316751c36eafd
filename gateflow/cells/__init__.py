"""Layer *cells*: the :class:`Cell` record (equations as validated data) and the declared
cells. Nothing here imports SymPy until a cell is parsed for derivation."""

from gateflow.cells._library import CELLS, get_cell
from gateflow.cells._params import check_params, param_shapes
from gateflow.cells._record import INPUT, Cell

__all__ = ["CELLS", "INPUT", "Cell", "check_params", "get_cell", "param_shapes"]
