"""PyTorch's parameter names: each cell's layout, and the conversions to and from it.

:data:`LAYOUTS` says, per cell, how a single-layer PyTorch module stacks the gates
(i, f, g, o; r, z, n) in ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0`` and
``bias_hh_l0`` (and ``weight_hr_l0`` for ``proj_size > 0``); a bias named in both
``bias_ih`` and ``bias_hh`` is their sum, a bias named in one is that slice (GRU's
``b_in``, ``b_hn``). :func:`to_torch_state_dict` and :func:`from_torch_state_dict` convert
between those names and gateflow's, checked: the gate count tells LSTM (4) from GRU (3)
from RNN (1), and weights of another module than the cell's are refused, saying which
module they are from; :func:`diagnose` refuses PyTorch names where gateflow names are
expected. ``_KEY`` is the grammar of every PyTorch recurrent parameter name (prefix, layer,
direction), read by the vocabulary (:mod:`._torch_modules`) and the reader
(:mod:`._torch_save`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from gateflow._errors import GateflowError
from gateflow._memory import check_fits
from gateflow.cells._library import CELLS
from gateflow.cells._params import check_params
from gateflow.cells._record import Cell
from gateflow.models._checks import as_cell, float_dtype, names

__all__ = ["LAYOUTS", "TorchLayout", "diagnose", "from_torch_state_dict", "layout_for",
           "to_torch_state_dict"]


@dataclass(frozen=True)
class TorchLayout:
    """How a single-layer PyTorch state_dict maps onto a cell's parameters.

    ``weight_ih_l0`` stacks the matrices in ``ih`` (each n × d) in PyTorch's gate order,
    ``weight_hh_l0`` those in ``hh`` (each n × n). ``bias_ih_l0`` and ``bias_hh_l0`` are split
    the same way; a parameter named in both is their sum (PyTorch's two LSTM biases only
    ever appear summed), a parameter named in one takes that slice alone (GRU's b_in, b_hn).
    A projected LSTM (``proj_size = p > 0``) also has ``weight_hr_l0`` (p × n), the
    projection ``hr``; then h has p units, so ``weight_hh_l0`` is 4n × p.
    """

    ih: tuple[str, ...]
    hh: tuple[str, ...]
    bias_ih: tuple[str, ...]
    bias_hh: tuple[str, ...]
    module: str  # "RNN", "LSTM" or "GRU"
    nonlinearity: str | None = None  # nn.RNN's nonlinearity
    hr: tuple[str, ...] = ()  # the projection of an LSTM with proj_size > 0


def _elman(phi: str) -> TorchLayout:
    return TorchLayout(ih=("W",), hh=("U",), bias_ih=("b",), bias_hh=("b",), module="RNN",
                       nonlinearity=phi)


_LSTM = TorchLayout(
    ih=("W_i", "W_f", "W_g", "W_o"), hh=("U_i", "U_f", "U_g", "U_o"),
    bias_ih=("b_i", "b_f", "b_g", "b_o"), bias_hh=("b_i", "b_f", "b_g", "b_o"), module="LSTM",
)
_LSTM_PROJ = TorchLayout(
    ih=_LSTM.ih, hh=_LSTM.hh, bias_ih=_LSTM.bias_ih, bias_hh=_LSTM.bias_hh, module="LSTM",
    hr=("P",),
)
_GRU = TorchLayout(
    ih=("W_r", "W_z", "W_n"), hh=("U_r", "U_z", "U_n"),
    bias_ih=("b_r", "b_z", "b_in"), bias_hh=("b_r", "b_z", "b_hn"), module="GRU",
)
#: The PyTorch module of each cell PyTorch implements, by cell name (``gru-cho`` takes
#: nn.GRU's weights; it computes a different function from them, see the cell's notes).
LAYOUTS: dict[str, TorchLayout] = {
    "rnn": _elman("tanh"), "rnn-relu": _elman("relu"), "lstm": _LSTM, "gru": _GRU,
    "gru-cho": _GRU, "lstm-proj": _LSTM_PROJ,
}
_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
_HR = "weight_hr_l0"
#: A PyTorch recurrent parameter: (prefix.)(weight|bias)_(ih|hh|hr), then ``_l<k>`` (and
#: ``_reverse``) for nn.RNN/LSTM/GRU, nothing for nn.RNNCell/LSTMCell/GRUCell.
_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)(?P<name>(?:weight|bias)_(?:ih|hh|hr))"
                  r"(?P<suffix>(?:_l(?P<layer>\d+)(?P<reverse>_reverse)?)?)$")
_CELL_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_PROJECTED = "lstm-proj"  # the cell of an nn.LSTM with proj_size > 0
_MODULE_BY_GATES = {1: "RNN", 3: "GRU", 4: "LSTM"}


def layout_for(cell: Cell) -> TorchLayout | None:
    """The PyTorch layout of ``cell``: by its name, when the layout covers its parameters."""
    layout = LAYOUTS.get(cell.name)
    if layout is None or {*layout.ih, *layout.hh, *layout.bias_ih, *layout.bias_hh,
                          *layout.hr} != set(cell.params):
        return None
    return layout


def _need_layout(cell: Cell) -> TorchLayout:
    layout = layout_for(cell)
    if layout is None:
        raise GateflowError(f"cell {cell.name!r} has no PyTorch layout; use gateflow parameter "
                            f"names ({', '.join(cell.params)}) instead of weight_ih_l0 etc.")
    return layout


# -- diagnosing a state_dict --------------------------------------------------------------
def _check_hr(key: str, hr, hh, where: str = "") -> None:
    """A projection ``weight_hr`` (p × n) checked on its own, before n is read from it: 2-D,
    real, non-empty, with as many rows as ``weight_hh`` has columns (h's p units)."""
    a = np.asarray(hr)
    head = f"{where}: " if where else ""
    if a.dtype.kind not in "fiu" or a.ndim != 2 or 0 in a.shape:
        raise GateflowError(f"{head}{key!r} has shape {a.shape} and dtype {a.dtype}; a projected "
                            "LSTM's weight_hr is a real (proj_size, hidden_size) matrix")
    hh = np.asarray(hh) if hh is not None else None
    if hh is not None and hh.ndim == 2 and hh.shape[1] != a.shape[0]:
        raise GateflowError(f"{head}{key!r} has shape {a.shape}: its {a.shape[0]} rows should "
                            f"be the {hh.shape[1]} columns of weight_hh (proj_size)")


def _gate_check(cell: Cell, sd: dict[str, np.ndarray]) -> int | None:
    """Gate count G of a single-layer PyTorch-named dict; raise if it is not ``cell``'s, or
    if a projected LSTM's (``weight_hr_l0``: h has proj_size units) meets another cell."""
    hr = sd.get(_HR)
    if hr is not None:
        _check_hr(_HR, hr, sd.get("weight_hh_l0"))
    if (hr is not None) != (cell.name == _PROJECTED):
        if hr is not None:
            shape = "x".join(map(str, np.shape(hr)))
            raise GateflowError(f"weights are from an nn.LSTM with proj_size > 0 ({_HR} is "
                                f"{shape}, proj_size x n); use cell {_PROJECTED!r}, not "
                                f"{cell.name!r}")
        if "weight_hh_l0" in sd:
            raise GateflowError(f"cell {_PROJECTED!r} needs the projection {_HR} of an nn.LSTM "
                                "built with proj_size > 0; these weights have none (use cell "
                                "'lstm')")
    w = sd.get("weight_hh_l0")
    rows = np.shape(hr)[1] if hr is not None and np.ndim(hr) == 2 else (
        w.shape[1] if w is not None and np.ndim(w) == 2 else 0)  # n
    if w is None or np.ndim(w) != 2 or rows == 0 or w.shape[0] % rows:
        return None
    g = w.shape[0] // rows
    layout = layout_for(cell)
    want = len(layout.hh) if layout is not None else None
    if g != want:
        module = _MODULE_BY_GATES.get(g, "recurrent module")
        if layout is None:
            with_layout = ", ".join(c.name for c in CELLS.values() if layout_for(c))
            expected = (f"cell {cell.name!r} has no PyTorch layout; use a cell that has one "
                        f"({with_layout}) or save the params under gateflow names")
        else:
            expected = (f"expected an nn.{layout.module} with {want} gates for cell "
                        f"{cell.name!r}; pick the cell that matches the model")
        raise GateflowError(f"weights look like a {module} with {g} gates; {expected} "
                            f"(weight_hh_l0 is {w.shape[0]}x{w.shape[1]}, n={rows})")
    return g


def diagnose(cell: Cell, params: dict) -> None:
    """Refuse PyTorch names where gateflow names are expected, saying what they hold."""
    torch_keys = {k for k in params if isinstance(k, str) and _KEY.match(k)}
    if torch_keys:
        _gate_check(cell, {k: np.asarray(v) for k, v in params.items() if k in torch_keys})
        raise GateflowError(f"params use PyTorch names ({names(torch_keys, 4)}); convert them "
                            "with gateflow.from_torch_state_dict(cell, sd) or load the "
                            "file with gateflow.load_params")


# -- mapping ------------------------------------------------------------------------------
def to_torch_state_dict(cell, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``params`` in PyTorch's single-layer names, the inverse of :func:`from_torch_state_dict`.

    A bias PyTorch splits over ``bias_ih`` and ``bias_hh`` is written whole into
    ``bias_ih_l0`` with zeros in ``bias_hh_l0`` (the sum is what the model computes).
    """
    cell = as_cell(cell)
    layout = _need_layout(cell)
    if isinstance(params, dict):
        diagnose(cell, params)
    check_params(cell, params)
    p = {k: np.asarray(v) for k, v in params.items()}
    dt = np.result_type(*p.values())
    # sizes from shapes (a broadcast view is a few bytes until it is copied): the
    # concatenated matrices and their copies in dt
    check_fits(2 * dt.itemsize * sum(a.size for a in p.values()),
               f"converting the params of cell {cell.name!r} to a PyTorch state_dict",
               "use smaller weights")
    in_ih = set(layout.bias_ih)
    return {
        "weight_ih_l0": np.concatenate([p[k] for k in layout.ih], axis=0).astype(dt),
        "weight_hh_l0": np.concatenate([p[k] for k in layout.hh], axis=0).astype(dt),
        "bias_ih_l0": np.concatenate([p[k] for k in layout.bias_ih]).astype(dt),
        "bias_hh_l0": np.concatenate(
            [np.zeros_like(p[k]) if k in in_ih else p[k] for k in layout.bias_hh]).astype(dt),
        **({_HR: p[layout.hr[0]].astype(dt)} if layout.hr else {}),
    }


def _check_state_dict(layout: TorchLayout, sd: dict[str, np.ndarray]) -> None:
    """Refuse a multi-layer, bidirectional or incomplete state_dict, extra keys, non-real
    dtypes and shapes that are not a single-layer nn.<module>'s."""
    keys = set(sd)
    names_ = (*_NAMES, _HR) if layout.hr else _NAMES
    unsupported = sorted(k for k in keys if k not in names_ and _KEY.match(k))
    if unsupported:
        why = "bidirectional" if any(k.endswith("_reverse") for k in unsupported) else "multi-layer"
        raise GateflowError(f"the state_dict is from a {why} module ({names(unsupported, 4)}); "
                            "pick one layer and direction with gateflow.load_model(path, "
                            "layer=L, direction=...) or keep only the *_l0 keys")
    extra = keys - set(names_)
    if extra:
        raise GateflowError(f"unexpected keys {names(extra)} next to the PyTorch RNN weights; "
                            f"keep only {', '.join(names_)}")
    missing = [k for k in (*_NAMES[:2], *names_[4:]) if k not in keys]
    has_b = [k in keys for k in _NAMES[2:]]
    if any(has_b) and not all(has_b):
        missing += [k for k, h in zip(_NAMES[2:], has_b) if not h]
    if missing:
        raise GateflowError(f"PyTorch state_dict misses {names(missing)}; save the whole "
                            f"state_dict() of a single-layer nn.{layout.module}")
    g = len(layout.hh)
    for k, a in sd.items():
        if a.dtype.kind not in "fiu":
            raise GateflowError(f"{k!r} has dtype {a.dtype}; PyTorch weights must be real numbers")
        want_nd = 2 if k.startswith("weight") else 1
        if a.ndim != want_nd or a.shape[0] == 0 or (a.shape[0] % g and k != _HR):
            raise GateflowError(f"{k!r} has shape {a.shape}; expected a {want_nd}-D array with "
                                f"{g}*n rows for an nn.{layout.module}")
    d = sd["weight_ih_l0"].shape[1]
    n = sd[_HR].shape[1] if layout.hr and sd[_HR].ndim == 2 else sd["weight_hh_l0"].shape[1]
    out = sd[_HR].shape[0] if layout.hr else n  # h's units: proj_size, or n
    want = {"weight_ih_l0": (g * n, d), "weight_hh_l0": (g * n, out),
            "bias_ih_l0": (g * n,), "bias_hh_l0": (g * n,), _HR: (out, n)}
    for k, a in sd.items():
        if a.shape != want[k]:
            raise GateflowError(f"{k!r} has shape {a.shape}; expected {want[k]} for an "
                                f"nn.{layout.module} with n={n}, d={d}"
                                + (f", proj_size={out}" if layout.hr else ""))


def from_torch_state_dict(cell, sd: dict[str, np.ndarray], *,
                          dtype=np.float64) -> dict[str, np.ndarray]:
    """gateflow params from a single-layer PyTorch state_dict given as NumPy arrays.

    Keys are ``weight_ih_l0``, ``weight_hh_l0`` and, unless the module was built with
    ``bias=False`` (then both are absent and the biases are zero), ``bias_ih_l0`` and
    ``bias_hh_l0``; and ``weight_hr_l0`` for cell ``lstm-proj`` (an nn.LSTM with
    ``proj_size > 0``). The result is checked like :func:`gateflow.load_params`' results.
    """
    cell = as_cell(cell)
    dt = float_dtype(dtype)
    if not isinstance(sd, dict):
        raise GateflowError(f"state_dict must be a dict of arrays keyed by PyTorch names, got "
                            f"{type(sd).__name__}; pass model.state_dict() as NumPy arrays")
    sd = {k: np.asarray(v) for k, v in sd.items()}
    if {"weight_ih", "weight_hh"} <= set(sd):  # an nn.*Cell: the keys of layer 0
        sd = {(f"{k}_l0" if k in _CELL_KEYS else k): v for k, v in sd.items()}
    _gate_check(cell, sd)
    layout = _need_layout(cell)
    _check_state_dict(layout, sd)
    # sizes from shapes (a broadcast view is a few bytes until it is copied): each block
    # is copied once into dt
    check_fits(dt.itemsize * sum(a.size for a in sd.values()),
               f"converting the state_dict to params of cell {cell.name!r}",
               "use smaller weights")
    n = sd[_HR].shape[1] if layout.hr else sd["weight_hh_l0"].shape[1]

    def block(a, j):
        return a[j * n:(j + 1) * n].astype(dt)

    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(layout.ih):
        out[name] = block(sd["weight_ih_l0"], j)
    for j, name in enumerate(layout.hh):
        out[name] = block(sd["weight_hh_l0"], j)
    for key, slots in (("bias_ih_l0", layout.bias_ih), ("bias_hh_l0", layout.bias_hh)):
        for j, name in enumerate(slots):
            part = block(sd[key], j) if key in sd else np.zeros(n, dtype=dt)
            out[name] = out[name] + part if name in out else part
    for name in layout.hr:
        out[name] = sd[_HR].astype(dt)
    out = {p: np.ascontiguousarray(out[p]) for p in cell.params if p in out}
    check_params(cell, out)
    return out
