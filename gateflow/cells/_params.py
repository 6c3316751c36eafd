"""A cell's parameters: their shapes for sizes (n, d), and the check that a dict of arrays
is a complete, well-shaped, finite parameter set for the cell.

Input matrices ``W_*`` are (n, d), recurrent matrices ``U_*`` (n, n), every other parameter
(biases, peepholes, IndRNN's ``u``) a vector (n,). A cell whose state blocks have other
sizes (PyTorch's projected LSTM: h has p units) names them (:attr:`Cell.sizes`), and every
shape follows from its equations (:attr:`Cell.param_dims`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np

from gateflow._errors import GateflowError
from gateflow._validate import shown, whole
from gateflow.cells._library import CELLS, get_cell
from gateflow.cells._record import Cell

__all__ = ["check_params", "check_sizes", "param_shapes"]


def _names(keys, limit: int = 12) -> str:
    keys = sorted(map(str, keys))
    listed = ", ".join(repr(k) for k in keys[:limit])
    return listed + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def sizes_for(cell, n: int, d: int, sizes=None) -> dict[str, int]:
    """Every size of ``cell`` by name: ``n``, ``d`` and the others ``sizes`` gives (a
    size it does not give is n // 2, at least 1: PyTorch needs proj_size < hidden_size)."""
    cell = get_cell(cell)
    out = {"n": whole(n, "hidden size n"), "d": whole(d, "input size d")}
    if sizes is not None and not (isinstance(sizes, Mapping)
                                  and all(isinstance(k, str) for k in sizes)):
        raise GateflowError(f"sizes must be a dict of a cell's other sizes by name, e.g. "
                            f"{{'p': 16}}; got {shown(sizes)}")
    given = {} if sizes is None else dict(sizes)
    both = sorted(set(given) & {"n", "d"})
    if both:
        raise GateflowError(f"sizes gives {both[0]!r}, which is an argument of its own; give "
                            "n and d as arguments and only the cell's other sizes in sizes")
    unknown = sorted(set(given) - set(cell.size_names))
    if unknown:
        raise GateflowError(f"cell {cell.name!r} has no size {unknown[0]!r}; its sizes are "
                            f"{', '.join((*cell.size_names, 'd'))}")
    for name in cell.size_names[1:]:
        out[name] = whole(given[name], f"size {name}") if name in given else max(1, out["n"] // 2)
    return out


def param_shapes(cell, n: int, d: int, sizes=None) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter of ``cell`` for hidden size ``n``, input size ``d`` and
    the cell's other sizes (``sizes``, e.g. ``{"p": 16}``), in declaration order."""
    cell = get_cell(cell)
    value = sizes_for(cell, n, d, sizes)
    return {p: tuple(value[x] for x in cell.param_dims[p]) for p in cell.params}


def _other_cell(cell: Cell, keys: set[str]) -> str | None:
    if keys == set(cell.params):
        return None
    for other in CELLS.values():
        if set(other.params) == keys:
            return other.name
    return None


def check_params(cell, params) -> tuple[int, int]:
    """Check ``params`` (parameter name -> array) against ``cell`` and return ``(n, d)``
    (:func:`check_sizes` gives every size).

    Raises :class:`GateflowError` for a non-dict, parameters of another cell, missing or
    extra names, non-real dtypes, wrong shapes and non-finite values.
    """
    sizes = check_sizes(cell, params)
    return sizes["n"], sizes["d"]


def check_sizes(cell, params) -> dict[str, int]:
    """Check ``params`` like :func:`check_params` and return every size by name
    (``{"n": …, "d": …}``, and e.g. ``"p"`` for the projected LSTM)."""
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
    seen: dict[str, Counter] = {}  # size name -> how often each length fills it
    for p, a in arrays.items():
        for name, length in zip(cell.param_dims[p], a.shape):
            seen.setdefault(name, Counter())[length] += 1
    value = {name: c.most_common(1)[0][0] for name, c in seen.items()}
    n, d = value.get("n", 0), value.get("d", 0)
    if n < 1:
        raise GateflowError(f"params for cell {cell.name!r} have hidden size n = 0; "
                            "every parameter needs n >= 1 rows")
    if "d" in seen and d < 1:
        raise GateflowError(f"params for cell {cell.name!r} have input size d = 0; "
                            "input matrices need d >= 1 columns")
    for name in cell.size_names[1:]:
        if value.get(name, 0) < 1:
            raise GateflowError(f"params for cell {cell.name!r} have size {name} = 0; "
                                f"it needs {name} >= 1")
    value["d"] = max(d, 1)
    expected = param_shapes(cell, n, value["d"], {k: v for k, v in value.items()
                                                  if k not in ("n", "d")})
    given = ", ".join(f"{k}={v if k != 'd' else d}" for k, v in value.items())
    for p in cell.params:
        got = arrays[p].shape
        if got != expected[p]:
            kind = mats.get(p, "vector")
            raise GateflowError(f"param {p!r} ({kind}) has shape {got}; expected {expected[p]} "
                                f"for {given} (inferred from the other params)")
    for p in cell.params:
        a = arrays[p]
        # the values it holds: a broadcast (stride-0) axis repeats one slice, checked once,
        # so that the check allocates no more than the array's own memory
        held = a[tuple(slice(0, 1) if s == 0 and k > 1 else slice(None)
                       for s, k in zip(a.strides, a.shape))]
        if a.dtype.kind == "f" and not np.all(np.isfinite(held)):
            bad = int(held.size - np.count_nonzero(np.isfinite(held))) * (a.size // held.size)
            raise GateflowError(f"param {p!r} has {bad} non-finite value(s) (NaN or inf); "
                                "fix or re-export the weights")
    return value
