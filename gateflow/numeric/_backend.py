"""Array backends as records: everything gateflow needs to know about NumPy or CuPy, in one
place (einops-style: CuPy is imported only when asked for).

A :class:`Backend` carries the array module, how to bring an array to the host, how much
memory a run may use, and whether the batch is split over worker threads. Code elsewhere
asks the record (``backend.to_host(a)``, ``backend.threaded``) instead of comparing
strings or probing ``__cuda_array_interface__``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from gateflow._errors import GateflowError
from gateflow._memory import available_memory
from gateflow._validate import choose

__all__ = ["BACKENDS", "DTYPES", "Backend", "get_backend", "get_dtype", "get_xp", "to_host"]

BACKENDS = ("numpy", "cupy")
DTYPES = {"float64": np.float64, "float32": np.float32}


@dataclass(frozen=True)
class Backend:
    """One array backend.

    Attributes:
        name: ``"numpy"`` or ``"cupy"``.
        xp: the array module.
        threaded: True where the batch is split over host worker threads (NumPy releases
            the GIL in BLAS and ufuncs); a GPU runs the whole batch in one stream.
        printer: the ``sympy.printing.numpy`` printer class that writes code for ``xp``.
    """

    name: str
    xp: ModuleType
    threaded: bool
    printer: str = "NumPyPrinter"

    def to_host(self, a: Any) -> np.ndarray:
        """``a`` as a NumPy array (a copy from the device for CuPy)."""
        return to_host(a)

    def asarray(self, a: Any, dtype=None):
        """``a`` on this backend's device (host arrays are copied over)."""
        return self.xp.asarray(a, dtype=dtype)

    def available_memory(self) -> int:
        """Bytes a run may use on this backend's device (see :mod:`gateflow._memory`)."""
        return available_memory(self.name)

    def owns(self, a: Any) -> bool:
        """Whether ``a`` already lives on this backend's device."""
        return (self.name == "cupy") == hasattr(a, "__cuda_array_interface__")


def to_host(a: Any) -> np.ndarray:
    """Any array (NumPy, CuPy, a list) as a NumPy array."""
    if hasattr(a, "__cuda_array_interface__"):
        import cupy

        return cupy.asnumpy(a)
    return np.asarray(a)


@cache
def get_backend(name: str = "numpy") -> Backend:
    """The backend called ``name``; a clear error if it cannot be used here."""
    choose(name, BACKENDS, "backend")
    if name == "numpy":
        return Backend("numpy", np, threaded=True)
    try:
        import cupy
    except ImportError:
        raise GateflowError("backend 'cupy' needs CuPy: pip install 'gateflow[gpu]' "
                            "(and a CUDA GPU)") from None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise GateflowError("backend 'cupy': no CUDA device is visible")
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise GateflowError(f"backend 'cupy': CUDA is not usable ({exc})") from None
    return Backend("cupy", cupy, threaded=False, printer="CuPyPrinter")


def get_xp(backend: str):
    """The array module of ``backend`` (see :func:`get_backend`)."""
    return get_backend(backend).xp


def get_dtype(dtype) -> np.dtype:
    """``"float64"``/``"float32"`` (or the NumPy types) as a dtype; anything else refused."""
    if isinstance(dtype, str):
        dtype = DTYPES[choose(dtype, DTYPES, "dtype")]
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise GateflowError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise GateflowError(f"dtype must be float32 or float64, got {dtype}")
    return dtype
