"""The record of one module of a linear-recurrence package (:class:`LinearModule`) and the
checked reading of its arrays, shared by the packages' readers (:mod:`._linear_ssm`,
:mod:`._linear_gated`).

:class:`_Reader` reads each array of one module once, as float64 (complex128 where the
package stores a complex parameter), and refuses anything else with one line that names
the array; :func:`_record` builds the :class:`LinearModule` from what it read; the rest
finds and orders the modules' key prefixes in a flat state dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from gateflow._errors import GateflowError
from gateflow._memory import check_fits
from gateflow.cells._linear import LINEAR_CELLS
from gateflow.cells._params import check_sizes
from gateflow.cells._record import Cell
from gateflow.models._checks import clip
from gateflow.models.formats._raw import precision
from gateflow.models.formats._recurrent import Recurrent

__all__ = ["Arrays", "LinearModule"]

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class LinearModule:
    """One module of a linear-recurrence package, read into gateflow's names.

    ``module`` is the key prefix without its trailing dot (``""`` for none); ``keys`` the
    arrays that were read; ``input`` says in words what the cell's x is; ``assumed`` one
    line per thing the state dict does not say. Every array was checked when the module was
    read; :attr:`params` are built from them on first use (a Mamba layer's expanded
    parameters are (ED·N) × ED each: a scan of a whole model allocates none of them). It
    unpacks as ``cell, params, assumed``.
    """

    module: str
    package: str  # the PyPI name: "mambapy"
    kind: str  # the package's class: "MambaBlock"
    cell: Cell
    hidden: int  # n: units per state block
    input_size: int  # d: the size of the cell's input x
    build: Callable[[], dict[str, np.ndarray]] = field(compare=False, repr=False)
    assumed: tuple[str, ...] = ()
    input: str = ""
    keys: tuple[str, ...] = ()
    direction: str = "forward"  # "reverse": runs over the time-reversed sequence (sru)
    layout: str = "batch-major"  # how the package's module takes its input

    @cached_property
    def params(self) -> dict[str, np.ndarray]:
        """The cell's parameters in gateflow's names, float64, checked."""
        return self._built()

    def _built(self) -> dict[str, np.ndarray]:
        params = self.build()
        sizes = check_sizes(self.cell, params)  # the mapping is this module's job
        if (sizes["n"], sizes["d"]) != (self.hidden, self.input_size):
            raise AssertionError(f"{self.package} {self.kind}: built n, d = {sizes['n']}, "
                                 f"{sizes['d']}, read {self.hidden}, {self.input_size}")
        return params

    def __iter__(self) -> Iterator:
        return iter((self.cell, self.params, self.assumed))

    @property
    def sizes(self) -> dict[str, int]:
        """Every size of the cell (``{"n": …, "d": …}``)."""
        return {"n": self.hidden, "d": self.input_size}

    def recurrent(self) -> Recurrent:
        """The module as the :class:`Recurrent` record every format lists (one layer, one
        direction; ``cell`` is the :data:`LINEAR_CELLS` name). Its ``weights`` builds the
        parameters afresh on each call (nothing is held by the record)."""
        name = self.cell.name

        def weights(cell: str, layer: int, direction: str) -> dict[str, np.ndarray]:
            if cell != name or layer != 0 or direction != self.direction:
                raise GateflowError(f"module {clip(repr(self.module), 60)} holds one layer of "
                                    f"cell {name!r} ({self.direction}), not {cell!r} layer "
                                    f"{layer} ({direction})")
            return self._built()

        return Recurrent(module=self.module, framework="PyTorch",
                         kind=f"{self.package} {self.kind}", cell=name, cells=(name,),
                         layers=1, directions=(self.direction,), hidden=self.hidden,
                         input=self.input_size, weights=weights, layout=self.layout,
                         note=f"the cell's input x is {self.input}",
                         assumed=self.assumed)


# -- reading arrays -----------------------------------------------------------------------


def _prefix(prefix: str) -> str:
    if not isinstance(prefix, str):
        raise GateflowError(f"prefix must be a string such as 'layers.0.', got "
                            f"{type(prefix).__name__}")
    return prefix if not prefix or prefix.endswith(".") else prefix + "."


class _Reader:
    """The arrays of one module: each read once, checked, as float64 (complex128 where the
    package stores a complex parameter); every refusal is one line naming the array."""

    def __init__(self, arrays: Arrays, prefix: str, package: str, kind: str) -> None:
        if not isinstance(arrays, Mapping):
            raise GateflowError(f"expected a state dict (a mapping of names to arrays), got "
                                f"{type(arrays).__name__}")
        self.arrays, self.prefix = arrays, _prefix(prefix)
        self.what = f"{package} {kind}" + (f" at {clip(repr(self.prefix[:-1]), 60)}"
                                           if self.prefix else "")
        self.read: list[str] = []

    def has(self, name: str) -> bool:
        return self.prefix + name in self.arrays

    def fail(self, name: str, why: str) -> GateflowError:
        return GateflowError(f"{self.what}: array {clip(repr(self.prefix + name), 80)} {why}")

    def get(self, name: str, shape: tuple[int | None, ...], *,
            complex_ok: bool = False) -> np.ndarray:
        """The array ``name`` with ``shape`` (None: any size on that axis)."""
        key = self.prefix + name
        if key not in self.arrays:
            raise GateflowError(f"{self.what}: no array {clip(repr(key), 80)}")
        try:
            a = np.asarray(self.arrays[key])
        except Exception as exc:  # a tensor numpy cannot take (bfloat16, on a GPU)
            raise self.fail(name, f"cannot be read as a NumPy array ({clip(str(exc), 80)})"
                            ) from None
        if a.dtype.kind == "c" and complex_ok:
            a = a.astype(np.complex128)
        elif a.dtype.kind in "fiu" and a.dtype != np.bool_:
            a = a.astype(np.float64)
        else:
            want = "real or complex" if complex_ok else "real"
            raise self.fail(name, f"has dtype {a.dtype}; a {want} float array is expected")
        if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
            want = "(" + ", ".join("·" if s is None else str(s) for s in shape) + ")"
            raise self.fail(name, f"has shape {tuple(a.shape)}; {want} expected")
        if not np.all(np.isfinite(a)):
            raise self.fail(name, "holds a NaN or an infinity")
        self.read.append(key)
        return a

    def absent(self, name: str, why: str) -> None:
        if self.has(name):
            raise self.fail(name, why)

    def precision(self) -> tuple[str, ...]:
        return precision(self.arrays, self.read,
                         f"module {self.prefix[:-1]!r}" if self.prefix else "the module")


def _record(r: _Reader, package: str, kind: str, cell: str,
            params: dict[str, np.ndarray] | Callable[[], dict[str, np.ndarray]],
            assumed: list[str], input_: str, *, n: int, d: int, direction: str = "forward",
            layout: str = "batch-major") -> LinearModule:
    """The record of a module whose arrays ``r`` read; ``params``, or the function that
    builds them (deferred: large), in gateflow's names."""
    build = params if callable(params) else (lambda: {k: v.copy() for k, v in params.items()})
    module = LinearModule(module=r.prefix[:-1], package=package, kind=kind,
                          cell=LINEAR_CELLS[cell], hidden=n, input_size=d, build=build,
                          assumed=(*assumed, *r.precision()), input=input_,
                          keys=tuple(r.read), direction=direction, layout=layout)
    if not callable(params):
        module._built()  # small: checked now
    return module


def _fits(n_floats: int, what: str) -> None:
    check_fits(8 * n_floats, what, "read a smaller module")


def _prefixes(arrays: Arrays, suffix: str) -> list[str]:
    """The prefixes of the keys that end in ``suffix`` after a dot (or are it), in file
    order."""
    out = []
    for key in arrays:
        if key == suffix:
            out.append("")
        elif key.endswith("." + suffix):
            out.append(key[:-len(suffix)])
    return list(dict.fromkeys(out))


def _block_diagonal(blocks: np.ndarray, transpose: bool) -> np.ndarray:
    """(H, a, b) blocks as one (H·a, H·b) block-diagonal matrix (each block transposed
    first when ``transpose``)."""
    if transpose:
        blocks = blocks.transpose(0, 2, 1)
    h, a, b = blocks.shape
    out = np.zeros((h * a, h * b))
    for k in range(h):
        out[k * a:(k + 1) * a, k * b:(k + 1) * b] = blocks[k]
    return out


def _order(arrays: Arrays, prefixes: list[str]) -> list[str]:
    """``prefixes`` in the order their first key appears in the file."""
    first: dict[str, int] = {}
    for i, key in enumerate(arrays):
        for p in prefixes:
            if p not in first and key.startswith(p):
                first[p] = i
    return sorted(prefixes, key=lambda p: first.get(p, len(first)))
