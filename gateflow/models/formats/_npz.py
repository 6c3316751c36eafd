"""The ``.npz`` reader, and the ``.npy`` header it is made of (also read for inputs):
shapes and dtypes come from the headers, checked against the data that follows, before
any member is inflated."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from gateflow._errors import GateflowError
from gateflow.models._checks import clip
from gateflow.models.formats._files import fits, show

__all__ = ["WHAT", "npy_header", "read", "sniff"]

WHAT = "an .npz archive"
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def sniff(head: bytes, members: Sequence[str] | None) -> str | None:
    """A zip archive of ``.npy`` members only (np.savez, np.savez_compressed)."""
    return WHAT if members is not None and all(m.endswith(".npy") for m in members) else None


def npy_header(fh: IO[bytes], size: int, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header of a .npy stream of ``size`` bytes, without reading
    the data; refuses pickled objects, records and a header that promises more bytes of data
    than the stream holds (``what`` names the stream in messages)."""
    version = np.lib.format.read_magic(fh)
    if version not in _NPY_HEADERS:
        raise GateflowError(f"cannot read {what}: .npy version {version[0]}.{version[1]} is not "
                            "read by gateflow; save a float array with np.save")
    shape, _, dtype = _NPY_HEADERS[version](fh)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        holds = ("Python objects, which gateflow never unpickles" if dtype.hasobject
                 else "records or subarrays, not plain numbers")
        raise GateflowError(f"cannot read {what}: it holds {holds} (dtype "
                            f"{clip(str(dtype), 40)}); save a float array")
    if any(s < 0 for s in shape):
        raise GateflowError(f"cannot read {what}: its header has a negative shape {shape}")
    promised, left = math.prod(shape) * dtype.itemsize, size - fh.tell()
    if promised > left:
        raise GateflowError(f"cannot read {what}: it is truncated (its header promises "
                            f"{promised} bytes of data for shape {shape}, but only {left} "
                            "follow); re-save it")
    return shape, dtype


def read(fh: BinaryIO, size: int, path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz, sized from the .npy headers (each checked against its zip
    member's size) before any member is inflated: a zip bomb is refused, not expanded."""
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        nbytes = count = 0
        for info in infos:
            with zf.open(info) as member:
                shape, dtype = npy_header(member, info.file_size, f"{show(path)} member "
                                          f"{clip(repr(info.filename), 60)}")
            count += math.prod(shape)
            nbytes += math.prod(shape) * dtype.itemsize
        fits(path, nbytes, count)
        out = {}
        for info in infos:
            with zf.open(info) as member:
                out[info.filename[:-len(".npy")]] = np.lib.format.read_array(member)
        return out
