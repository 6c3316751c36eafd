"""PyTorch: the ``.pt``/``.pth``/``.ckpt`` reader and the state_dict vocabulary.

The reader runs ``torch.load(..., weights_only=True)`` only: pickled code is never
executed, and the refused global is named. A training checkpoint is searched (depth first,
bounded) for the dicts that hold recurrent weights, under any key (``model_state`` next to
``step`` and ``optimizer_state``, Lightning's ``state_dict``, ``['checkpoint']['model']``);
optimizer and scheduler states are never searched. Where the state dict was found is said
in each module's ``where``; when none is found the message lists the keys looked at.
Weights stored below float32 (float16, bfloat16, quantized) are said in ``assumed``.

The vocabulary is read from every container format (``.pt``, ``.safetensors``, ``.npz``):

* ``nn.RNN``/``nn.LSTM``/``nn.GRU``: ``weight_ih_l<k>``, ``weight_hh_l<k>``,
  ``bias_ih_l<k>``, ``bias_hh_l<k>`` for layer k, with ``_reverse`` for the second
  direction and ``weight_hr_l<k>`` for ``proj_size > 0``;
* ``nn.RNNCell``/``nn.LSTMCell``/``nn.GRUCell``: ``weight_ih``, ``weight_hh``, ``bias_ih``,
  ``bias_hh``;

each under any module prefix (``encoder.rnn.``): :func:`scan` lists one
:class:`~gateflow.models.formats._recurrent.Recurrent` per prefix. :data:`LAYOUTS` says,
per cell, how PyTorch stacks the gates (i, f, g, o; r, z, n); a bias named in both
``bias_ih`` and ``bias_hh`` is their sum, a bias named in one is that slice (GRU's
``b_in``, ``b_hn``). The gate count tells LSTM (4) from GRU (3) from RNN (1); nothing
tells nn.RNN's tanh from its relu, so that module asks for ``--cell``.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gateflow._errors import GateflowError, arg, as_given
from gateflow._memory import check_fits
from gateflow.cells._library import CELLS
from gateflow.cells._params import check_params
from gateflow.cells._record import Cell
from gateflow.models._checks import as_cell, clip, float_dtype, names, one_line
from gateflow.models.formats._files import fits, show
from gateflow.models.formats._raw import Raw, precision, where_of
from gateflow.models.formats._recurrent import Recurrent

__all__ = ["LAYOUTS", "WHAT", "TorchLayout", "diagnose", "from_torch_state_dict", "layout_for",
           "NESTED", "read", "scan", "select", "sniff", "to_torch_state_dict"]


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
_CELL_BY_MODULE = {"LSTM": ("lstm",), "GRU": ("gru",), "RNN": ("rnn", "rnn-relu")}


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


# -- finding the recurrent modules of a state_dict ----------------------------------------
def _suffix(key: str) -> str:
    """``"_l1_reverse"`` of ``"weight_ih_l1_reverse"``; ``""`` for nn.*Cell keys."""
    m = _KEY.match(key)
    return m["suffix"] if m else ""


def _module_name(prefix: str) -> str:
    return prefix[:-1] if prefix.endswith(".") else prefix


def _groups(raw: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """PyTorch recurrent keys by module prefix, each with the prefix stripped."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for k, v in raw.items():
        m = _KEY.match(k)
        if m:
            groups.setdefault(m["prefix"], {})[k[len(m["prefix"]):]] = v
    return groups


def _family(cell: str) -> str:
    """``gru`` of ``gru[gate=hard_sigmoid(0.2,0.5)]``: a variant weighs what its family does
    (asked for only of a record whose file declares no activations)."""
    if "[" not in cell:
        return cell
    from gateflow.cells._activations import parse_name

    return parse_name(cell)[1]


def _describe(module: str, sd: dict[str, np.ndarray]) -> Recurrent:
    """One module's record, from its keys and shapes (checked: every layer and direction
    complete, every shape an nn.<kind>'s with the same sizes)."""
    where = f"module {module!r}" if module else "the state_dict"
    is_cell = "weight_hh" in sd or "weight_ih" in sd
    if is_cell and any(_suffix(k) for k in sd):
        raise GateflowError(f"{where} mixes nn.*Cell keys (weight_ih) and nn.RNN/LSTM/GRU keys "
                            f"(weight_ih_l0); save one module per prefix")
    suffixes = [""] if is_cell else sorted(
        {_suffix(k) for k in sd},
        key=lambda s: (int(s[2:].split("_")[0]), s.endswith("_reverse")))
    layers = len({s.split("_reverse")[0] for s in suffixes})
    reverse = any(s.endswith("_reverse") for s in suffixes)
    directions = ("forward", "reverse") if reverse else ("forward",)
    want_suffixes = [""] if is_cell else [
        f"_l{k}{r}" for k in range(layers) for r in ("", "_reverse")[:len(directions)]]
    missing = [f"weight_{m}{s}" for s in want_suffixes for m in ("ih", "hh")
               if f"weight_{m}{s}" not in sd]
    if missing:
        raise GateflowError(f"{where} misses {names(missing, 4)}; save the whole "
                            "state_dict() of the module")
    for k, a in sd.items():
        if a.dtype.kind not in "fiu":
            raise GateflowError(f"{k!r} has dtype {a.dtype}; PyTorch weights must be real numbers")
        if a.ndim != (2 if k.startswith("weight") else 1) or 0 in a.shape:
            raise GateflowError(f"{where}: {k!r} has shape {a.shape}, which no PyTorch "
                                "recurrent module has")
    hh, ih = sd[f"weight_hh{want_suffixes[0]}"], sd[f"weight_ih{want_suffixes[0]}"]
    hr = sd.get(f"weight_hr{want_suffixes[0]}")
    if hr is not None:
        _check_hr(f"weight_hr{want_suffixes[0]}", hr, hh, where)
        lacking = [f"weight_hr{s}" for s in want_suffixes if f"weight_hr{s}" not in sd]
        if lacking:
            raise GateflowError(f"{where} misses {names(lacking, 4)}: a projected LSTM has a "
                                "weight_hr per layer and direction; save the whole "
                                "state_dict() of the module")
    n = hr.shape[1] if hr is not None else hh.shape[1]
    proj = hr.shape[0] if hr is not None else 0
    if hh.shape[0] % n or hh.shape[0] // n not in _MODULE_BY_GATES:
        raise GateflowError(f"{where}: weight_hh{want_suffixes[0]} is {hh.shape[0]}x"
                            f"{hh.shape[1]}, not G*n x n for G = 1, 3 or 4 gates (nn.RNN, GRU, "
                            "LSTM)")
    g = hh.shape[0] // n
    kind = _MODULE_BY_GATES[g]
    out = proj or n
    for s in want_suffixes:
        layer = int(s[2:].split("_")[0]) if s else 0
        d = ih.shape[1] if layer == 0 else out * len(directions)
        want = {f"weight_ih{s}": (g * n, d), f"weight_hh{s}": (g * n, out),
                f"bias_ih{s}": (g * n,), f"bias_hh{s}": (g * n,)}
        if proj:
            want[f"weight_hr{s}"] = (proj, n)
        for k, shape in want.items():
            if k in sd and sd[k].shape != shape:
                raise GateflowError(f"{where}: {k!r} has shape {sd[k].shape}; expected {shape} "
                                    f"for an nn.{kind} with hidden_size={n}"
                                    + (f", proj_size={proj}" if proj else ""))
        has_b = [f"bias_ih{s}" in sd, f"bias_hh{s}" in sd]
        if any(has_b) and not all(has_b):
            raise GateflowError(f"{where} misses bias_{'hh' if has_b[0] else 'ih'}{s}; save "
                                "the whole state_dict() of the module")
    extra = sorted(set(sd) - {f"{m}{s}" for s in want_suffixes for m in (
        "weight_ih", "weight_hh", "bias_ih", "bias_hh", *(("weight_hr",) if proj else ()))})
    if extra:
        raise GateflowError(f"{where}: unexpected keys {names(extra, 4)} for an nn.{kind} with "
                            f"{layers} layer(s)")
    cells = (_PROJECTED,) if proj else _CELL_BY_MODULE[kind]
    torch_kind = f"nn.{kind}Cell" if is_cell else f"nn.{kind}"
    note = ""
    if kind == "RNN":
        note = (f"{torch_kind}'s nonlinearity (tanh or relu) is not in its weights: give "
                f"{as_given('cell')} rnn or {as_given('cell')} rnn-relu")
    if proj:
        note = f"proj_size={proj}: h has {proj} units and c has {n}"

    def weights(cell: str, layer: int, direction: str) -> dict[str, np.ndarray]:
        s = "" if is_cell else f"_l{layer}" + ("_reverse" if direction == "reverse" else "")
        one = {f"{m}_l0": sd[f"{m}{s}"] for m in ("weight_ih", "weight_hh", "bias_ih",
                                                   "bias_hh", "weight_hr") if f"{m}{s}" in sd}
        return from_torch_state_dict(_family(cell), one)

    return Recurrent(module=module, framework="PyTorch", kind=torch_kind,
                     cell=None if len(cells) > 1 else cells[0], cells=cells, layers=layers,
                     directions=directions, hidden=n, input=ih.shape[1], proj=proj,
                     weights=weights, note=note)


def scan(raw: dict[str, np.ndarray]) -> tuple[Recurrent, ...]:
    """Every PyTorch recurrent module in a file's arrays (keys ``weight_ih_l0`` …, or
    ``weight_ih`` … for the ``*Cell`` modules, under any prefix), in the file's order, with
    where the reader found them (a checkpoint's key) and the precision they were stored in
    when it was below float32 (:mod:`._raw`)."""
    out = []
    for prefix, sd in _groups(raw).items():
        found = _describe(_module_name(prefix), sd)
        what = f"module {found.module!r}" if found.module else "the state dict"
        out.append(replace(found, where=where_of(raw, prefix), assumed=(
            *found.assumed, *precision(raw, [prefix + k for k in sd], what))))
    return tuple(out)


def select(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The single-layer PyTorch part of ``raw`` (prefix stripped), or None for gateflow names.
    Several modules, several layers or two directions are refused here, with the options
    that pick one (:func:`gateflow.load_model` reads them all)."""
    groups = _groups(raw)
    if not groups:
        return None
    if len(groups) > 1:
        listed = ", ".join(repr(_module_name(p)) for p in groups)
        raise GateflowError(f"found PyTorch recurrent weights of {len(groups)} modules "
                            f"({listed}); pick one with {arg('module')} NAME")
    ((prefix, sd),) = groups.items()
    unsupported = sorted(k for k in sd if _suffix(k) not in ("", "_l0"))
    if unsupported:
        why = ("bidirectional" if any(k.endswith("_reverse") for k in unsupported)
               else "multi-layer")
        raise GateflowError(f"the weights are from a {why} module ({names(unsupported, 4)}); "
                            f"pick one with {arg('layer')} L and {arg('direction')} "
                            "forward|reverse")
    return {(k + "_l0" if not _suffix(k) else k): v for k, v in sd.items()}


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


# -- the .pt / .pth reader ----------------------------------------------------------------
WHAT = "a torch.save file"


def sniff(head: bytes, members: Sequence[str] | None) -> str | None:
    """A zip archive with a ``data.pkl`` (torch.save), or a bare pickle (legacy torch.save)."""
    if members is not None:
        if any(m.endswith("constants.pkl") or "/code/" in m for m in members):
            return None  # a TorchScript archive (torch.jit.save): see _torchscript
        return WHAT if any(m.endswith("data.pkl") for m in members) else None
    return "a pickle (as legacy torch.save writes)" if head.startswith(b"\x80") else None


def _unsafe_globals(torch, fh: BinaryIO) -> list[str]:
    """The globals of a torch.save file that ``weights_only=True`` refuses, found by torch's
    own static scan of its pickle (``torch.serialization.get_unsafe_globals_in_checkpoint``,
    torch >= 2.5: the pickle's opcodes are read, nothing is unpickled), sorted. Empty where
    torch has no such scan (torch 2.1 to 2.4), for a legacy (non-zip) file, which it does
    not scan, and where the scan fails (an opcode it does not know, a damaged archive):
    :func:`_refusal` then reads torch's message."""
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is None:
        return []
    fh.seek(0)
    try:
        return sorted(str(g) for g in scan(fh))
    except Exception:  # not a file torch can scan: the message says what there is to say
        return []
    finally:
        fh.seek(0)


def _refusal(path: Path, exc: BaseException, unsafe: Sequence[str] = ()) -> str:
    """One line for an exception of ``torch.load(weights_only=True)``: the globals it
    refused (``unsafe``, from :func:`_unsafe_globals`), else the global torch's message
    names (the fallback for legacy files and torch < 2.5; torch prints builtins without
    their module), else the reason."""
    text = one_line(exc, None)
    if not unsafe:
        found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", text)
        if found:
            unsafe = [found[1] if "." in found[1] else f"builtins.{found[1]}"]
    if unsafe:
        listed = ", ".join(unsafe[:-1]) + " and " + unsafe[-1] if len(unsafe) > 1 else unsafe[0]
        return (f"{show(path)} pickles {clip(listed, 160)}, which gateflow refuses to load "
                "(unpickling it could run code); save model.state_dict() (a dict of tensors) "
                "with torch.save")
    said = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    detail = said[1] if said else re.sub(r"^Weights only load failed\..*?trusted source\. ",
                                         "", text)
    return (f"cannot read {show(path)}: corrupt or not a torch.save file "
            f"({clip(detail or type(exc).__name__, 120)}); re-save it with "
            "torch.save(model.state_dict(), path)")


#: Where checkpoints commonly keep the model's state_dict (Lightning's ``.ckpt``:
#: ``state_dict``): a dict of tensors under one of these keys is the parameters file's
#: state dict when no dict in the checkpoint holds recurrent weights (gateflow names).
NESTED = ("state_dict", "model_state_dict", "model", "net")
#: Keys whose values are never searched for the model's state dict: optimizer and scheduler
#: states (their tensors are keyed by parameter index, or mirror the parameters' names).
_NOT_MODEL = re.compile(r"optim|^opt(?:_|$)|sched|scaler", re.IGNORECASE)
_DEPTH = 6  # how deep a checkpoint is searched for state dicts
_VISITS = 512  # how many containers at most
_BREADTH = 256  # how many entries of one container are descended into
_LISTED = 12  # keys named in a message


def _recurrent_key(k) -> bool:
    """A PyTorch recurrent matrix name (``…weight_ih_l0``, ``…weight_hh``)."""
    m = _KEY.match(k) if isinstance(k, str) else None
    return m is not None and m["name"] in ("weight_ih", "weight_hh")


def _key_path(path: tuple) -> str:
    """``'model_state'``, ``'checkpoint' → 'model'``, ``'models' → [0]``."""
    return " → ".join(f"[{k}]" if isinstance(k, int) else repr(k) for k in path)


def _kind_of(torch, v) -> str:
    if isinstance(v, torch.Tensor):
        return "a tensor"
    if isinstance(v, dict):
        return "an empty dict" if not v else f"a dict of {len(v)}"
    if isinstance(v, (list, tuple)):
        return f"a {type(v).__name__} of {len(v)}"
    name = type(v).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _search(torch, obj) -> tuple[list[tuple[tuple, dict]], list[str]]:
    """Every dict in the checkpoint ``obj`` that holds PyTorch recurrent weights (a state
    dict), in the file's order (depth first), with its key path, and the keys looked at
    (each with what it held), bounded in depth, breadth and count. A state dict is not
    searched further; optimizer and scheduler states are never searched
    (:data:`_NOT_MODEL`)."""
    found: list[tuple[tuple, dict]] = []
    looked: list[str] = []
    queue: list[tuple[tuple, object]] = [((), obj)]
    visits = 0
    while queue and visits < _VISITS:
        path, node = queue.pop()
        visits += 1
        if isinstance(node, dict):
            if any(_recurrent_key(k) and isinstance(v, torch.Tensor) for k, v in node.items()):
                found.append((path, node))
                continue
            items = list(node.items())
        elif isinstance(node, (list, tuple)):
            items = list(enumerate(node))
        else:
            continue
        below = []
        for k, v in items[:_BREADTH]:
            here = (*path, k)
            if isinstance(k, str) and _NOT_MODEL.search(k):
                looked.append(f"{_key_path(here)} (not searched: optimizer/scheduler state)")
                continue
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                continue
            looked.append(f"{_key_path(here)} ({_kind_of(torch, v)})")
            if isinstance(v, (dict, list, tuple)) and len(here) < _DEPTH:
                below.append((here, v))
        queue += reversed(below)  # a stack: the first entry is searched next
    return found, looked


def _fallback(torch, obj: dict) -> tuple[tuple, dict] | None:
    """A state dict without recurrent weights (gateflow names): ``obj`` itself when every
    value is a tensor, else its first entry of :data:`NESTED` that is a dict of tensors."""
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return (), obj
    for key in NESTED:
        sub = obj.get(key)
        if isinstance(sub, dict) and all(isinstance(v, torch.Tensor) for v in sub.values()):
            return (key,), sub
    return None


# -- sizes from shapes, before torch or NumPy allocates --------------------------------------
#: Bytes per element of the storage types a legacy (pre-1.6, non-zip) torch.save names.
_ELEMENT_BYTES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8,
    "QInt8Storage": 1, "QUInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1, "UntypedStorage": 1,
}
_WIDEST = 16  # an element of a storage type not listed above, counted generously
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER


class _Inert:
    """Any global of a legacy pickle during the size pre-scan: built, filled and called
    as data, never as the class it names (nothing of the file runs)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs) -> _Inert:
        return _Inert()

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, value) -> None:
        pass

    def extend(self, values) -> None:
        pass


class _StorageKind(_Inert):
    """A storage type (``torch.FloatStorage``) named in a legacy pickle."""

    def __init__(self, name: str) -> None:
        self.name = name


class _SizeScan(pickle.Unpickler):
    """Reads a legacy torch.save pickle as inert data (:class:`_Inert` for every global) to
    learn the bytes of every storage it declares (``('storage', type, key, location,
    numel, ...)``), which ``torch.load`` allocates before it reads them."""

    def __init__(self, fh: BinaryIO) -> None:
        super().__init__(fh)
        self.storages: dict[object, int] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name.endswith("Storage"):
            return _StorageKind(name)
        return _Inert

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            kind, key, numel = pid[1], pid[2], pid[4]
            if isinstance(numel, int) and not isinstance(numel, bool) and numel >= 0:
                each = _ELEMENT_BYTES.get(getattr(kind, "name", ""), _WIDEST)
                self.storages[key if isinstance(key, (str, int)) else repr(key)] = numel * each
        return _Inert()


def _legacy_storages(fh: BinaryIO, size: int, path: Path) -> None:
    """Refuse a legacy (non-zip) torch.save whose storages declare more bytes than follow
    its pickle: ``torch.load`` would allocate them all before noticing (a 2 KB file that
    asks for 16 GB). A file that is not a legacy torch.save is left to ``torch.load``."""
    try:
        if _SizeScan(fh).load() != _LEGACY_MAGIC:
            return
        _SizeScan(fh).load()  # the protocol version
        _SizeScan(fh).load()  # sys_info
        scan = _SizeScan(fh)
        scan.load()
    except Exception:  # not a legacy torch.save: torch.load says why
        return
    finally:
        left = size - fh.tell()
        fh.seek(0)
    declared = sum(scan.storages.values())
    if declared > max(left, 0):
        raise GateflowError(f"cannot read {show(path)}: corrupt torch.save file (its tensors "
                            f"declare {declared} bytes of storage, but only {max(left, 0)} "
                            "bytes follow); re-save it with torch.save(model.state_dict(), "
                            "path)")


def _array(torch, path: Path, k: str, v) -> tuple[np.ndarray, str | None]:
    """One tensor as a float64 (or integer) array, and its dtype in the file when it was
    narrower than float32 (None else); an expanded (stride-0) view becomes a real array
    (its size was checked by :func:`read` from its shape)."""
    t = v.detach().cpu()
    narrow = None
    if t.is_quantized:
        narrow = f"{str(t.dtype).removeprefix('torch.')} (quantized)"
        t = t.dequantize()
    if t.is_complex() or (t.is_floating_point() and t.element_size() < 2):
        raise GateflowError(f"{show(path)}: tensor {clip(repr(k), 60)} has dtype "
                            f"{t.dtype}; weights must be float64/32/16 or bfloat16")
    if t.is_floating_point() and t.element_size() < 4:
        narrow = narrow or str(t.dtype).removeprefix("torch.")
    elif not t.is_floating_point() and t.dtype != torch.bool:
        narrow = narrow or str(t.dtype).removeprefix("torch.")
    t = t.to(torch.float64) if t.is_floating_point() else t
    return np.ascontiguousarray(t.contiguous().numpy()), narrow


def _none_found(path: Path, looked: list[str]) -> GateflowError:
    listed = ", ".join(looked[:_LISTED]) + (f", … ({len(looked) - _LISTED} more)"
                                             if len(looked) > _LISTED else "")
    return GateflowError(f"{show(path)} holds no state dict with recurrent weights (no dict of "
                         f"tensors named weight_ih_l0, weight_hh, …); keys looked at: "
                         f"{listed or 'none'}; save model.state_dict() with torch.save")


def read(fh: BinaryIO, size: int, path: Path) -> dict[str, np.ndarray]:
    """A state_dict from ``torch.load(weights_only=True)``: pickled code is never run. The
    file size bounds the tensors (torch.save stores zip members, never compresses them, so a
    compressed member is refused: torch would inflate it); a legacy (non-zip) file's
    storages are sized from its pickle before ``torch.load`` allocates them, and every
    tensor is sized from its shape (an expanded, stride-0 tensor is a few bytes on disk)
    before it is converted; torch's warnings are silenced.

    A checkpoint is searched (bounded) for the dicts that hold recurrent weights, under any
    key (``model_state``, Lightning's ``state_dict``, ``['checkpoint']['model']``, …;
    never an optimizer's state): one is read as it is and said in ``where``; several are
    all read, each key prefixed by its key path (``ema.rnn.weight_ih_l0``)."""
    if zipfile.is_zipfile(fh):
        with zipfile.ZipFile(fh) as zf:
            packed = [i.filename for i in zf.infolist() if i.compress_type != zipfile.ZIP_STORED]
        if packed:
            raise GateflowError(f"cannot read {show(path)}: member {clip(repr(packed[0]), 60)} "
                                "is compressed, which torch.save never writes; re-save it with "
                                "torch.save(model.state_dict(), path)")
    fh.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import torch
        except ImportError:
            raise GateflowError(f"reading {show(path)} needs PyTorch; install it with "
                                "pip install 'gateflow[torch]' or re-save the weights as "
                                ".safetensors") from None
        fits(path, size, size // 2)
        if not zipfile.is_zipfile(fh):
            fh.seek(0)
            _legacy_storages(fh, size, path)
        fh.seek(0)
        try:
            obj = torch.load(fh, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for code, RuntimeError for corrupt files
            raise GateflowError(_refusal(path, exc, _unsafe_globals(torch, fh))) from None
        if not isinstance(obj, dict):
            raise GateflowError(f"{show(path)} holds a {type(obj).__name__}, not a state_dict; "
                                "save model.state_dict() (a dict of tensors) with torch.save")
        found, looked = _search(torch, obj)
        if not found:
            one = _fallback(torch, obj)
            if one is None:
                raise _none_found(path, looked)
            found = [one]
        # sizes from shapes, not from the file: an expanded (stride-0) tensor is a few
        # bytes on disk and numel × 8 bytes once converted to float64
        fits(path, size, sum(v.numel() for _, sd in found for v in sd.values()
                             if isinstance(v, torch.Tensor)))
        several = len(found) > 1
        out = Raw()
        for key_path, sd in found:
            prefix = ".".join(map(str, key_path)) + "." if several else ""
            if key_path:
                out.where[prefix] = f"state dict under key {_key_path(key_path)}"
            for k, v in sd.items():
                if not isinstance(v, torch.Tensor):
                    continue  # a step count, a config: not a parameter
                if not isinstance(k, str):
                    raise GateflowError(f"{show(path)} is a dict but its key "
                                        f"{clip(repr(k), 60)} is a {type(k).__name__}, not a "
                                        "parameter name; save model.state_dict() (string "
                                        "keys)")
                out[prefix + k], narrow = _array(torch, path, k, v)
                if narrow:
                    out.dtypes[prefix + k] = narrow
        return out
