"""The ``.safetensors`` reader, on safetensors' own lazy API.

``safetensors.safe_open`` reads and checks the header (an 8-byte little-endian length, a
JSON object of dtypes, shapes and byte ranges that must cover the data exactly, each
range matching its shape); gateflow takes the keys, shapes and dtypes from it, checks the
memory a read needs before a byte of data is read, and lets it read each tensor. What the
library cannot do is done here, each said where it is: BF16 tensors (NumPy has no
bfloat16; they become float32 exactly), and the words of a refusal (the library's error
names neither the tensor nor the byte counts)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gateflow._errors import GateflowError
from gateflow.models._checks import clip, one_line
from gateflow.models.formats._files import fits, show
from gateflow.models.formats._raw import Raw

__all__ = ["WHAT", "read", "sniff"]

WHAT = "a safetensors file"
_MAX_HEADER = 100 * 2**20  # the safetensors library's own limit
#: The dtypes gateflow reads, as NumPy dtypes (BF16 as its uint16 bit patterns).
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
           "I32": "<i4", "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2",
           "U8": "u1", "BOOL": "?"}
_LIBRARY_SAYS = "Error while deserializing header: "


def sniff(head: bytes, members: Sequence[str] | None) -> str | None:
    """A plausible header length followed by ``{`` (the library has no test of its own that
    reads only the first bytes)."""
    if members is None and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= _MAX_HEADER:
        return WHAT
    return None


def _bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values, given as their uint16 bit patterns, as float32: exact, since a
    bfloat16 is the top half of a float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _source(fh: BinaryIO, path: Path) -> str | Path:
    """What ``safe_open`` opens: the very file gateflow opened and checked (a regular file),
    through ``/proc/self/fd`` where there is one, so that a path swapped since (for a FIFO
    that would block) is never read; the path elsewhere."""
    fd_path = f"/proc/self/fd/{fh.fileno()}"
    return fd_path if os.path.exists(fd_path) else path


def _counts(values) -> bool:
    """Whether ``values`` is a JSON list of integers >= 0."""
    return isinstance(values, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


def _unreadable(key: str, dtype: Any) -> str | None:
    """Why gateflow does not read a tensor of ``dtype`` (None: it does)."""
    if dtype in _DTYPES:
        return None
    return (f"tensor {clip(repr(key), 60)} has dtype {clip(repr(dtype), 30)}, which gateflow "
            "does not read (use F64, F32, F16 or BF16)")


def _header_fault(header: Any, size: int) -> str | None:
    """What is wrong with a parsed header, in words that name the tensor and the bytes, or
    None when nothing here finds it. Only called once the library has refused the file:
    its error says the kind of fault but not which tensor or how many bytes."""
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    entries = []
    for key, spec in header.items():
        if key == "__metadata__":
            continue
        name = clip(repr(key), 60)
        if not isinstance(spec, dict):
            return f"the header entry of {name} is not an object"
        fields: list[Any] = [spec.get(f) for f in ("dtype", "shape", "data_offsets")]
        dtype, shape, offsets = fields
        why = _unreadable(key, dtype)
        if why:
            return why
        if not (_counts(shape) and _counts(offsets) and len(offsets) == 2
                and offsets[0] <= offsets[1]):
            return f"tensor {name} has a malformed shape or data_offsets"
        begin, end = offsets
        if end - begin != math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize:
            return (f"tensor {name} of shape {tuple(shape)} and dtype {dtype} does not match "
                    f"its {end - begin} bytes of data")
        entries.append((begin, end, key))
    entries.sort()
    for before, after in zip(entries, entries[1:]):
        if after[0] < before[1]:
            return f"tensors {clip(repr(before[2]), 40)} and {clip(repr(after[2]), 40)} overlap"
    if entries and entries[-1][1] > size:
        return (f"it is truncated: the header promises {entries[-1][1]} bytes of data, but "
                f"only {size} follow")
    return None


def _refused(fh: BinaryIO, size: int, path: Path, exc: Exception) -> GateflowError:
    """One line for a file ``safe_open`` refused: the header is read again here only to say
    which tensor and how many bytes; a fault only the library finds (a gap between tensors,
    bytes after the last, metadata that is not text) is said in the library's words."""
    def bad(why: str) -> GateflowError:
        return GateflowError(f"cannot read {show(path)}: {why}; re-export the file")

    fh.seek(0)
    n = int.from_bytes(fh.read(8), "little")
    if n > min(_MAX_HEADER, size - 8):
        return bad(f"it is truncated (its header length is {n} bytes, but only {size - 8} "
                   "follow)")
    try:
        header = json.loads(fh.read(n))
    except (ValueError, RecursionError):  # also UnicodeDecodeError
        return bad("its header is not valid JSON")
    said = one_line(exc, 160).removeprefix(_LIBRARY_SAYS)
    return bad(_header_fault(header, size - 8 - n) or f"safetensors refuses it ({said})")


def read(fh: BinaryIO, size: int, path: Path) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file, in the order of their bytes: keys, dtypes and
    shapes from ``safe_open`` (which checks the whole header first), the memory checked
    before any tensor is read; BF16 becomes float32 exactly, like torch's own conversion,
    and is said in the result's ``dtypes`` (:class:`._raw.Raw`)."""
    from safetensors import SafetensorError, safe_open

    try:
        # backend="pread" reads with pread(2): a file cut short while it is read is an
        # error, where the default mmap backend would end the process with SIGBUS
        opened = safe_open(_source(fh, path), framework="numpy", backend="pread")
    except (SafetensorError, OSError) as exc:
        raise _refused(fh, size, path, exc) from None
    with opened as f:
        specs = []
        for key in f.offset_keys():
            piece = f.get_slice(key)
            dtype, shape = piece.get_dtype(), tuple(piece.get_shape())
            why = _unreadable(key, dtype)
            if why:  # the library reads F8, complex, …; gateflow does not
                raise GateflowError(f"cannot read {show(path)}: {why}; re-export the file")
            specs.append((key, dtype, shape))
        sizes = [math.prod(s) * np.dtype(_DTYPES[d]).itemsize for _, d, s in specs]
        fits(path, sum(sizes), sum(math.prod(s) for _, _, s in specs))
        out = Raw()
        base = None
        begin = 0  # the library checked that the tensors cover the data, in this order
        try:
            for (key, dtype, shape), nbytes in zip(specs, sizes):
                if dtype != "BF16":
                    out[key] = f.get_tensor(key)
                else:  # NumPy has no bfloat16, so the library's numpy framework cannot
                    # return one: its bytes are read here, at the offset the checked
                    # header implies (8 + header length + the bytes of the tensors before)
                    if base is None:
                        fh.seek(0)
                        base = 8 + int.from_bytes(fh.read(8), "little")
                    fh.seek(base + begin)
                    buf = bytearray(nbytes)
                    if fh.readinto(buf) != nbytes:  # type: ignore[attr-defined]
                        raise OSError("the file is shorter than its header says")
                    out[key] = _bf16_to_float32(np.frombuffer(buf, "<u2").reshape(shape))
                    out.dtypes[key] = "bfloat16"
                begin += nbytes
        except (SafetensorError, OSError) as exc:
            raise GateflowError(f"cannot read {show(path)}: it changed while being read "
                                f"({one_line(exc, 120)})") from None
    return out
