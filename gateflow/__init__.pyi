# The public API of gateflow, declared once. `gateflow/__init__.py` reads this stub at import
# (lazy_loader.attach_stub, SPEC 1): each name loads on first use, and type checkers read the
# same lines. Grouped by level, as the API reference is (docs/api/index.md).

# -- cells and derivation ------------------------------------------------------------------
from .cells._library import CELLS as CELLS
from .cells._library import get_cell as get_cell
from .cells._record import Cell as Cell
from .cells._stack import stack as stack
from .symbolic._derive import LinOp as LinOp
from .symbolic._derive import Structure as Structure
from .symbolic._derive import Term as Term
from .symbolic._derive import derive as derive
from .symbolic._derive import derive_input as derive_input
from .symbolic._printing import render as render

# -- measurement ---------------------------------------------------------------------------
from .numeric._chain import ChainResult as ChainResult
from .numeric._chain import all_lags as all_lags
from .numeric._lyapunov import LyapunovResult as LyapunovResult
from .numeric._lyapunov import kaplan_yorke as kaplan_yorke
from .numeric._lyapunov import lyapunov as lyapunov
from .jobs._contract import load_result as load_result
from .jobs._contract import save_result as save_result

# -- models --------------------------------------------------------------------------------
from .models._params import init_params as init_params
from .models._params import load_params as load_params
from .models._params import save_params as save_params
from .models._inputs import make_inputs as make_inputs
from .models._inputs import load_inputs as load_inputs
from .models._model import find_models as find_models
from .models._model import load_model as load_model
from .models._model import load_initial_state as load_initial_state
from .models._capture import capture as capture
from .models.formats._pytorch import TorchLayout as TorchLayout
from .models.formats._pytorch import from_torch_state_dict as from_torch_state_dict
from .models.formats._pytorch import to_torch_state_dict as to_torch_state_dict

# -- analysis ------------------------------------------------------------------------------
from .analysis._analysis import DecayFit as DecayFit
from .analysis._analysis import fit_batch as fit_batch
from .analysis._analysis import fit_decay as fit_decay
from .analysis._analysis import gate_path as gate_path
from .analysis._analysis import mean_field_tanh as mean_field_tanh
from .analysis._analysis import memory_horizon as memory_horizon
from .analysis._analysis import pascanu_bound as pascanu_bound
from .analysis._analysis import summarize as summarize

# -- figures and reports -------------------------------------------------------------------
from .presentation._labels import direct_label as direct_label
from .presentation._plot import Overlay as Overlay
from .presentation._plot_lags import plot_decay as plot_decay
from .presentation._plot_lags import plot_input_sensitivity as plot_input_sensitivity

# -- jobs --------------------------------------------------------------------------------
from .jobs._decay import decay as decay
from .jobs._report import ReportConfig as ReportConfig
from .jobs._report import write_report as write_report
from .jobs._sweep import SweepGrid as SweepGrid
from .jobs._sweep import sweep as sweep
from .jobs._analyze import analyze as analyze

# -- errors and version --------------------------------------------------------------------
from ._errors import GateflowError as GateflowError
from ._version import __version__ as __version__
