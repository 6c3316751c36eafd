"""ONNX: a recurrent node's weights — followed to the file's constants, their shapes
checked, ``DynamicQuantizeLSTM``'s 8-bit ones dequantized, mapped onto gateflow's names
(the ONNX reader's helper; :mod:`._onnx`'s docstring gives the rules).

:func:`weights_in` follows each weight input (``W``, ``R``, ``B``, ``P``; a quantized
node's scales and zero points) to a constant (:class:`._onnx_fold.Folder`); :func:`shapes`
reads the hidden and input sizes from them; :func:`weights_of` makes ``Recurrent.weights``,
which converts them when asked for: rows split by gate, the biases of W and R summed where
gateflow has one, 8-bit weights dequantized exactly in float64 as (q − zero_point)·scale
and transposed back; :func:`precision` says what narrow types their values went through.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gateflow._errors import GateflowError
from gateflow.cells._params import check_params
from gateflow.cells._record import Cell
from gateflow.models._checks import clip, one_line
from gateflow.models.formats._files import fits, show
from gateflow.models.formats._onnx_fold import Damaged, Folded, Folder
from gateflow.models.formats._onnx_node import (
    LAYOUTS,
    QLSTM,
    Layout,
    Skip,
    check_place,
    node_phrase,
)
from gateflow.models.formats._onnx_scope import Unfoldable

if TYPE_CHECKING:
    from onnx import NodeProto

    from gateflow.models.formats._onnx_scope import Scope

__all__ = ["QUANT", "WEIGHTS", "precision", "shapes", "weights_in", "weights_of"]

_PEEPHOLES = ("p_i", "p_o", "p_f")  # P's order
WEIGHTS = {"W": 1, "R": 2, "B": 3, "P": 7}  # input slots; P is LSTM's only
QUANT = {"W_scale": 8, "W_zero_point": 9, "R_scale": 10, "R_zero_point": 11}
_PRECISION = {"float16": "float16 weights (11 significant bits)",
              "bfloat16": "bfloat16 weights (8 significant bits)"}


# -- finding and checking -------------------------------------------------------------------
def shapes(op: str, weights: dict[str, Folded], layout: Layout, nd: int,
           hidden: int | None) -> tuple[int, int]:
    """(n, d) from R and W (a quantized node's W and R are transposed); Skip for shapes that
    do not fit the operator or each other."""
    g = layout.gates
    quantized = op == "DynamicQuantizeLSTM"
    r = weights["R"].shape
    w = weights["W"].shape
    if quantized:
        if len(r) != 3 or r[0] != nd or r[1] < 1 or r[2] != g * r[1]:
            raise Skip(f"has R of shape {list(r)}; expected [num_directions={nd}, hidden, "
                       f"{g}*hidden]")
        n = r[1]
        if len(w) != 3 or w[0] != nd or w[2] != g * n or w[1] < 1:
            raise Skip(f"has W of shape {list(w)}; expected [{nd}, input, {g * n}] for "
                       f"hidden {n}")
        d = w[1]
    else:
        if len(r) != 3 or r[0] != nd or r[2] < 1 or r[1] != g * r[2]:
            raise Skip(f"has R of shape {list(r)}; expected [num_directions={nd}, "
                       f"{g}*hidden, hidden]")
        n = r[2]
        if len(w) != 3 or w[:2] != (nd, g * n) or w[2] < 1:
            raise Skip(f"has W of shape {list(w)}; expected [{nd}, {g * n}, input] for "
                       f"hidden {n}")
        d = w[2]
    want = {"B": (nd, 2 * g * n), "P": (nd, 3 * n)}
    for role in ("B", "P"):
        if role in weights and weights[role].shape != want[role]:
            raise Skip(f"has {role} of shape {list(weights[role].shape)}; expected "
                       f"{list(want[role])} for hidden {n}")
    if quantized:
        for m in ("W", "R"):
            s, z = weights[f"{m}_scale"], weights[f"{m}_zero_point"]
            if s.shape not in ((nd,), (nd, g * n)) or z.shape != s.shape:
                raise Skip(f"has {m}_scale of shape {list(s.shape)} and {m}_zero_point of "
                           f"shape {list(z.shape)}; expected both [{nd}] (per direction) or "
                           f"[{nd}, {g * n}] (per channel)")
    if hidden is not None and hidden != n:
        raise Skip(f"has hidden_size={hidden!r} but R has shape {list(r)} (hidden {n}); the "
                   "node is inconsistent, re-export it")
    return n, d


def weights_in(folder: Folder, node: NodeProto, scope: Scope,
               roles: dict[str, int]) -> dict[str, Folded]:
    """Each input ``roles`` names (role -> input slot) followed to its constant; Skip for a
    W, R or quantization input left out, or one that is not a constant gateflow can fold."""
    inputs = list(node.input)
    out: dict[str, Folded] = {}
    for role, slot in roles.items():
        name = inputs[slot] if slot < len(inputs) else ""
        if not name:
            if role in ("W", "R") or role in QUANT:
                raise Skip(f"has no input {role}; re-export the model")
            continue
        try:
            out[role] = folder.value(scope, name)
        except Damaged as exc:
            raise Skip(f"has a damaged weight {role}: {exc}; re-export the model") from None
        except Unfoldable as exc:
            raise Skip(f"takes its weight {role} from {clip(repr(name), 60)}, which is not "
                       f"a constant gateflow can fold: {exc}") from None
    return out


def precision(marks: set[str]) -> list[str]:
    """A line of ``assumed`` for each narrow type the weights' values went through."""
    out = []
    for mark in sorted(marks):
        if mark in _PRECISION:
            out.append(f"{_PRECISION[mark]}: the analysis is of these values, in float64")
        elif mark.startswith("float"):
            out.append(f"{mark} weights: the analysis is of these values, in float64")
        else:
            out.append(f"{mark} weights dequantized: the analysis is of the dequantized float "
                       "model")
    return out


# -- converting -----------------------------------------------------------------------------
def _dequantized(q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """(q − zero_point)·scale in float64, transposed to [num_directions, G·n, columns]:
    ``q`` is [num_directions, columns, G·n], ``scale`` and ``zero`` [num_directions] or
    [num_directions, G·n]."""
    s = scale.astype(np.float64)
    z = zero.astype(np.float64)
    if s.ndim == 1:
        s, z = s[:, None, None], z[:, None, None]
    else:
        s, z = s[:, None, :], z[:, None, :]
    return np.transpose((q.astype(np.float64) - z) * s, (0, 2, 1))


def _map(layout: Layout, arrays: dict[str, np.ndarray], k: int, n: int,
         peepholes: bool) -> dict[str, np.ndarray]:
    """Direction ``k``'s weights in gateflow names; a bias in both halves of B is the sum."""
    g = layout.gates

    def rows(a: np.ndarray, j: int) -> np.ndarray:
        return a[j * n:(j + 1) * n]

    out: dict[str, np.ndarray] = {}
    for role, names in (("W", layout.ih), ("R", layout.hh)):
        for j, name in enumerate(names):
            out[name] = rows(arrays[role][k], j)
    b = arrays["B"][k] if "B" in arrays else np.zeros(2 * g * n)
    for offset, names in ((0, layout.bias_w), (g, layout.bias_r)):
        for j, name in enumerate(names):
            part = rows(b, offset + j)
            out[name] = out[name] + part if name in out else part
    if peepholes:
        for j, name in enumerate(_PEEPHOLES):
            out[name] = rows(arrays["P"][k], j)
    return out


def weights_of(path: Path, folder: Folder, op: str, module: str, cell: Cell,
               directions: tuple[str, ...], weights: dict[str, Folded], n: int
               ) -> Callable[[str, int, str], dict[str, np.ndarray]]:
    """``Recurrent.weights``: one direction's weights in gateflow's names, float64,
    converted (and dequantized) when asked for."""
    label = node_phrase(op, module)
    layout = QLSTM if op == "DynamicQuantizeLSTM" else LAYOUTS[op]

    def weights_for(want: str, layer: int, direction: str) -> dict[str, np.ndarray]:
        name = want.name if isinstance(want, Cell) else want
        if name != cell.name:
            raise GateflowError(f"{label} is cell {cell.name!r}; its weights cannot be read "
                                f"as {clip(repr(name), 40)}")
        check_place(label, directions, layer, direction)
        count = sum(f.size for f in weights.values())
        fits(path, 8 * count, count)
        try:
            raw = {role: folder.load(f, f"weight {role}") for role, f in weights.items()}
        except Unfoldable as exc:
            raise GateflowError(f"cannot read {show(path)}: {label} has a damaged weight: "
                                f"{exc}; re-export the model") from None
        arrays = {role: a.astype(np.float64) for role, a in raw.items()
                  if role in ("B", "P") or op != "DynamicQuantizeLSTM"}
        if op == "DynamicQuantizeLSTM":
            for m in ("W", "R"):
                arrays[m] = _dequantized(raw[m], raw[f"{m}_scale"], raw[f"{m}_zero_point"])
        mapped = _map(layout, arrays, directions.index(direction), n, "P" in weights)
        params = {p: np.ascontiguousarray(mapped[p], dtype=np.float64) for p in cell.params}
        try:
            check_params(cell, params)
        except GateflowError as exc:
            raise GateflowError(f"cannot read {show(path)}: {label} has unusable weights: "
                                f"{one_line(exc, 160)}") from None
        return params

    return weights_for
