"""A cell's parameters: their shapes for sizes (n, d), and the check that a dict of arrays
is a complete, well-shaped, finite parameter set for the cell.

Input matrices ``W_*`` are (n, d), recurrent matrices ``U_*`` (n, n), every other parameter
(biases, peepholes, IndRNN's ``u``) a vector (n,).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from gateflow._errors import GateflowError
from gateflow._validate import shown, whole
from gateflow.cells._library import CELLS, get_cell
from gateflow.cells._record import Cell

__all__ = ["check_params", "param_shapes"]


def _names(keys, limit: int = 12) -> str:
    keys = sorted(map(str, keys))
    listed = ", ".join(repr(k) for k in keys[:limit])
    return listed + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def param_shapes(cell, n: int, d: int) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter of ``cell`` for hidden size ``n`` and input size ``d``,
    in the cell's declaration order."""
    cell = get_cell(cell)
    n = whole(n, "hidden size n")
    d = whole(d, "input size d")
    mats = cell.matrices
    shapes: dict[str, tuple[int, ...]] = {}
    for p in cell.params:
        kind = mats.get(p)
        shapes[p] = (n, d) if kind == "input" else (n, n) if kind == "recurrent" else (n,)
    return shapes


def _other_cell(cell: Cell, keys: set[str]) -> str | None:
    if keys == set(cell.params):
        return None
    for other in CELLS.values():
        if set(other.params) == keys:
            return other.name
    return None


def check_params(cell, params) -> tuple[int, int]:
    """Check ``params`` (parameter name -> array) against ``cell`` and return ``(n, d)``.

    Raises :class:`GateflowError` for a non-dict, parameters of another cell, missing or
    extra names, non-real dtypes, wrong shapes and non-finite values.
    """
    cell = get_cell(cell)
    if not isinstance(params, dict):
        raise GateflowError(f"params must be a dict of arrays keyed by parameter name, "
                            f"got {type(params).__name__}")
    keys = set(params)
    other = _other_cell(cell, keys)
    if other is not None:
        raise GateflowError(f"params look like cell {other!r} (keys {_names(keys, 6)}), "
                            f"not {cell.name!r}; pick cell {other!r} or pass {cell.name!r} params "
                            f"({', '.join(cell.params)})")
    missing = [p for p in cell.params if p not in keys]
    if missing:
        raise GateflowError(f"params for cell {cell.name!r} miss {_names(missing)}; "
                            f"it needs {', '.join(cell.params)}")
    extra = keys - set(cell.params)
    if extra:
        raise GateflowError(f"params for cell {cell.name!r} have unexpected keys "
                            f"{_names(map(str, extra))}; it takes only {', '.join(cell.params)}")

    arrays: dict[str, np.ndarray] = {}
    for p in cell.params:
        a = params[p]
        if not isinstance(a, np.ndarray):
            try:
                a = np.asarray(a)
            except Exception as exc:  # arbitrary objects
                raise GateflowError(f"param {p!r} is not array-like ({shown(exc, 120)}); "
                                    "pass a NumPy array") from None
        if a.dtype.kind not in "fiu":
            raise GateflowError(f"param {p!r} has dtype {a.dtype}; parameters must be real numbers "
                                "(convert with .astype(np.float64))")
        arrays[p] = a

    mats = cell.matrices
    rows = Counter(a.shape[0] for a in arrays.values() if a.ndim >= 1)
    n = rows.most_common(1)[0][0] if rows else 0
    cols = Counter(arrays[p].shape[1] for p, k in mats.items()
                   if k == "input" and arrays[p].ndim == 2)
    d = cols.most_common(1)[0][0] if cols else 0
    if n < 1:
        raise GateflowError(f"params for cell {cell.name!r} have hidden size n = 0; "
                            "every parameter needs n >= 1 rows")
    if cols and d < 1:
        raise GateflowError(f"params for cell {cell.name!r} have input size d = 0; "
                            "input matrices need d >= 1 columns")
    expected = param_shapes(cell, n, max(d, 1))
    for p in cell.params:
        got = arrays[p].shape
        if got != expected[p]:
            kind = mats.get(p, "vector")
            raise GateflowError(f"param {p!r} ({kind}) has shape {got}; expected {expected[p]} "
                                f"for n={n}, d={d} (inferred from the other params)")
    for p in cell.params:
        a = arrays[p]
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise GateflowError(f"param {p!r} has {bad} non-finite value(s) (NaN or inf); "
                                "fix or re-export the weights")
    return n, d
