"""Weight-file formats as a registry of readers, and of the foreign vocabularies they carry.

A :class:`Reader` turns one container format into raw arrays keyed as in the file; a
:class:`Vocabulary` turns a framework's names (PyTorch's ``weight_ih_l0``, ...) into
gateflow's, whatever container held them. gateflow's own names (``W_f``, ``U_f``, ...) are
read from every container. A new format is one module plus one entry in :data:`READERS`
(and in :data:`VOCABULARIES` when it brings its own names).

Reading is defensive (see :mod:`._files`): only existing regular files are opened, the real
format is sniffed from the leading bytes and named when it is not the extension's, and
sizes are checked against the memory budget before anything is inflated or allocated.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gateflow._errors import GateflowError
from gateflow.cells._record import Cell
from gateflow.models._checks import clip
from gateflow.models.formats import _npz, _pytorch, _safetensors
from gateflow.models.formats._files import Kind, check_format, open_regular, parsing, recognise

__all__ = ["READERS", "VOCABULARIES", "Reader", "Vocabulary", "read_arrays", "reader_for"]

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Reader:
    """One container format.

    ``sniff(head, members)`` gets a file's first 512 bytes and, for a readable zip archive,
    its member names (else None); it returns what the file is in words when this reader
    takes it, else None. ``read(fh, size, path)`` returns the raw arrays, keyed as in the
    file, and checks sizes (:func:`._files.fits`) before it allocates.
    """

    name: str
    extensions: tuple[str, ...]  # lower case, with the dot; the first is the one to name
    what: str  # the format in words, for messages: "a safetensors file"
    sniff: Callable[[bytes, Sequence[str] | None], str | None]
    read: Callable[[BinaryIO, int, Path], Arrays]


@dataclass(frozen=True)
class Vocabulary:
    """A framework's parameter names.

    ``select(raw)`` is the part of a file's arrays in these names (ready for ``to_params``),
    or None when there is none; ``to_params(cell, sd, dtype=...)`` maps it to gateflow's
    names, checked; ``diagnose(cell, params)`` refuses these names where gateflow's are
    expected, saying how to convert them.
    """

    name: str
    select: Callable[[Arrays], Arrays | None]
    to_params: Callable[..., Arrays]
    diagnose: Callable[[Cell, dict], None]


READERS: tuple[Reader, ...] = (
    Reader("safetensors", (".safetensors",), _safetensors.WHAT, _safetensors.sniff,
           _safetensors.read),
    Reader("npz", (".npz",), _npz.WHAT, _npz.sniff, _npz.read),
    Reader("pytorch", (".pt", ".pth"), _pytorch.WHAT, _pytorch.sniff, _pytorch.read),
)
VOCABULARIES: tuple[Vocabulary, ...] = (
    Vocabulary("pytorch", _pytorch.select, _pytorch.from_torch_state_dict, _pytorch.diagnose),
)
_EXTENSIONS = tuple(ext for r in READERS for ext in r.extensions)


def reader_for(path: Path) -> Reader:
    """The reader of ``path``'s extension; a GateflowError listing the known ones else."""
    ext = path.suffix.lower()
    for reader in READERS:
        if ext in reader.extensions:
            return reader
    if os.path.isdir(path):
        raise GateflowError(f"cannot read params from {clip(repr(str(path)), 80)}: it is a "
                            "folder; give the weights file")
    raise GateflowError(f"cannot read params from {clip(repr(str(path)), 80)}: unknown "
                        f"extension {clip(repr(ext or '(none)'), 40)}; use one of "
                        f"{', '.join(_EXTENSIONS)}")


def read_arrays(path: Path) -> Arrays:
    """The raw arrays of a weights file: extension, file type and real format checked
    before anything is parsed, sizes checked before anything is allocated."""
    reader = reader_for(path)
    ext = path.suffix.lower()
    with open_regular(path, "params") as (fh, size), parsing(path, ext, "re-export the file"):
        check_format(path, recognise(fh, READERS), Kind(reader.name, reader.what, ext),
                     _EXTENSIONS, "save the weights with safetensors, np.savez or torch.save")
        return reader.read(fh, size, path)
