"""One setup for every run of a cell on inputs: the arguments checked, as a typed record.

:func:`prepare` is shared by :func:`~gateflow.numeric._chain.all_lags` (and the sweep, which
calls it), :func:`~gateflow.numeric._chain.states` and
:func:`~gateflow.numeric._lyapunov.lyapunov`: it resolves the cell, checks the parameters
against it (sizes from the weights' shapes), the inputs' shape and the initial states, and
returns a :class:`Prepared`. What costs memory or time (the compiled plan, the weights and
inputs on the device) is made on first use, so that a caller checks its memory budget
first and a run that is split (a stack's row groups) compiles only what it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from gateflow._errors import GateflowError
from gateflow._validate import closest, real_array, shown
from gateflow.cells._library import get_cell
from gateflow.cells._params import check_sizes
from gateflow.cells._record import Cell
from gateflow.numeric._backend import Backend, get_backend, get_dtype
from gateflow.numeric._compile import Bound, Compiled, compile_cell

__all__ = ["Prepared", "block_dims", "check_input_shape", "check_s0", "float_dtype",
           "prepare"]


def float_dtype(dtype) -> np.dtype:
    """``"float64"``/``"float32"`` or the matching NumPy dtype."""
    if isinstance(dtype, str):
        return get_dtype(dtype)
    try:
        dt = None if dtype is None else np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in (np.float32, np.float64):
        raise GateflowError(f"dtype must be 'float64' or 'float32', got {shown(dtype)}")
    return dt


def block_dims(cell: Cell, sizes: Mapping[str, int]) -> dict[str, int]:
    """State block -> its number of units, from the sizes by name (:func:`check_sizes`)."""
    return {s: sizes[cell.block_size[s]] for s in cell.state}


def check_input_shape(x: np.ndarray, n_in: int) -> tuple[int, int]:
    """Inputs (T, B, d) with T, B >= 1 and d features; returns (T, B). Finiteness is
    checked later, after the memory estimate (a huge x is refused before it is scanned)."""
    if x.ndim != 3:
        raise GateflowError(f"inputs must have shape (T, B, d); got shape {x.shape}")
    T, B, d = x.shape
    if T < 1 or B < 1:
        raise GateflowError(f"inputs need T >= 1 steps and B >= 1 sequences; got T={T}, B={B}")
    if d != n_in:
        raise GateflowError(f"inputs have d={d} features but the weights expect d={n_in}")
    return T, B


def check_s0(cell: Cell, s0, dims: Mapping[str, int], B: int) -> dict[str, np.ndarray] | None:
    """Initial states: a dict of known blocks only, each finite of shape (n,) or (B, n),
    n the block's size (``dims``)."""
    if s0 is None:
        return None
    if not isinstance(s0, Mapping):
        raise GateflowError(f"s0 must be a dict of initial states by block "
                            f"({', '.join(cell.state)}), got {shown(s0)}")
    out = {}
    for b, v in s0.items():
        if b not in cell.state:
            raise GateflowError(f"s0 has no state block {shown(b)} for cell {cell.name!r}"
                                f"{closest(b, cell.state)}")
        v = real_array(v, f"s0[{b!r}]").astype(np.float64)
        n = dims[b]
        if v.shape not in ((n,), (B, n)) or not np.all(np.isfinite(v)):
            raise GateflowError(f"s0[{b!r}] must be finite, of shape ({n},) or ({B}, {n}); "
                                f"got shape {v.shape}")
        out[b] = v
    return out


@dataclass(frozen=True)
class Prepared:
    """A cell, its weights and inputs, checked: what a run of the cell needs.

    ``x_host`` is the inputs as given (a host array of real numbers, (T, B, d)); ``s0``
    the initial states checked (host float64, (n,) or (B, n) per block, None for zeros).
    ``compiled``, ``bound``, ``x`` and ``s0_device`` are made on first use."""

    cell: Cell
    params: Mapping[str, Any]
    sizes: dict[str, int]  # by size name: n, d, and e.g. p
    dims: dict[str, int]  # state block -> its number of units
    backend: Backend
    dtype: np.dtype
    x_host: np.ndarray
    s0: dict[str, np.ndarray] | None
    T: int
    B: int

    @property
    def d(self) -> int:
        """Input features."""
        return self.sizes["d"]

    @cached_property
    def compiled(self) -> Compiled:
        """The cell's state-Jacobian plan for this backend and dtype."""
        return compile_cell(self.cell, self.backend.name, self.dtype.name)

    @cached_property
    def bound(self) -> Bound:
        """The plan with the weights on the device."""
        return Bound(self.compiled, dict(self.params))

    @cached_property
    def x(self):
        """The inputs on the device, in the run's dtype."""
        return self.backend.asarray(self.x_host, dtype=self.dtype)

    @cached_property
    def s0_device(self) -> dict | None:
        """The initial states on the device, broadcast to (B, n) per block."""
        if self.s0 is None:
            return None
        xp = self.backend.xp
        return {b: xp.broadcast_to(self.backend.asarray(v, dtype=self.dtype),
                                   (self.B, self.dims[b])) for b, v in self.s0.items()}


def prepare(cell: str | Cell, params: Mapping[str, Any], x, s0=None, backend: str = "numpy",
            dtype="float64") -> Prepared:
    """Check a run's arguments: the cell (or its name), its parameters (sizes read from
    their shapes), the inputs (T, B, d) and the initial states; the backend and dtype.
    Raises :class:`~gateflow._errors.GateflowError` naming the first that is wrong."""
    cell = get_cell(cell)
    sizes = check_sizes(cell, params)
    dims = block_dims(cell, sizes)
    be = get_backend(backend)
    dt = float_dtype(dtype)
    x_host = real_array(x, "inputs")
    T, B = check_input_shape(x_host, sizes["d"])
    return Prepared(cell, params, dict(sizes), dims, be, dt, x_host,
                    check_s0(cell, s0, dims, B), T, B)
