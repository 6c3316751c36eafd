"""Weight-file formats as a registry of readers, and of the foreign vocabularies they carry.

A :class:`Reader` turns one container format into raw arrays keyed as in the file (``read``:
safetensors, npz, torch.save) or, for formats that describe a whole model, straight into
the recurrent modules it holds (``scan``: ONNX graphs, Keras archives). A
:class:`Vocabulary` turns a framework's names (PyTorch's ``weight_ih_l0``, ...) into
gateflow's, whatever container held them, and lists the modules they describe. gateflow's
own names (``W_f``, ``U_f``, ...) are read from every array container. A new format is one
module plus one entry in :data:`READERS` (and in :data:`VOCABULARIES` when it brings its
own names); :func:`read_models` then lists what it holds for ``gateflow inspect`` and
:func:`gateflow.load_model`.

Reading is defensive (see :mod:`._files`): only existing regular files are opened, the real
format is sniffed from the leading bytes and named when it is not the extension's, and
sizes are checked against the memory budget before anything is inflated or allocated.
Nothing in a file is ever executed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gateflow._errors import GateflowError, arg
from gateflow.cells._record import Cell
from gateflow.models._checks import clip
from gateflow.models.formats import (
    _foreign,
    _keras,
    _npz,
    _onnx,
    _pytorch,
    _safetensors,
    _torch_modules,
    _torch_save,
    _torchscript,
)
from gateflow.models.formats._files import (
    Kind,
    check_format,
    open_regular,
    parsing,
    recognise,
    show,
)
from gateflow.models.formats._recurrent import Found, Recurrent

__all__ = ["READERS", "VOCABULARIES", "Found", "Reader", "Recurrent", "Vocabulary",
           "read_arrays",
           "read_models", "reader_for"]

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Reader:
    """One container format.

    ``sniff(head, members)`` gets a file's first 512 bytes and, for a readable zip archive,
    its member names (else None); it returns what the file is in words when this reader
    takes it, else None. ``read(fh, size, path)`` returns the raw arrays, keyed as in the
    file; a model format has ``scan(fh, size, path)`` instead, which returns its recurrent
    modules (a :class:`Found`, with what it skipped, or a plain tuple of modules). Both
    check sizes (:func:`._files.fits`) before they allocate.
    """

    name: str
    extensions: tuple[str, ...]  # lower case, with the dot; the first is the one to name
    what: str  # the format in words, for messages: "a safetensors file"
    sniff: Callable[[bytes, Sequence[str] | None], str | None]
    read: Callable[[BinaryIO, int, Path], Arrays] | None = None
    scan: Callable[[BinaryIO, int, Path], Found | tuple[Recurrent, ...]] | None = None


@dataclass(frozen=True)
class Vocabulary:
    """A framework's parameter names.

    ``select(raw)`` is the part of a file's arrays in these names (ready for ``to_params``),
    or None when there is none; ``to_params(cell, sd, dtype=...)`` maps it to gateflow's
    names, checked; ``diagnose(cell, params)`` refuses these names where gateflow's are
    expected, saying how to convert them; ``scan(raw)`` lists the modules they describe
    (a :class:`Found` or a plain tuple of modules).
    """

    name: str
    select: Callable[[Arrays], Arrays | None]
    to_params: Callable[..., Arrays]
    diagnose: Callable[[Cell, dict], None]
    scan: Callable[[Arrays], Found | tuple[Recurrent, ...]]


READERS: tuple[Reader, ...] = (
    Reader("safetensors", (".safetensors",), _safetensors.WHAT, _safetensors.sniff,
           read=_safetensors.read),
    Reader("npz", (".npz",), _npz.WHAT, _npz.sniff, read=_npz.read),
    Reader("pytorch", (".pt", ".pth", ".ckpt"), _torch_save.WHAT, _torch_save.sniff,
           read=_torch_save.read),
    # a zip with a data.pkl too, but also code/ and constants.pkl (pytorch's sniff leaves it)
    Reader("torchscript", (".jit", ".torchscript"), _torchscript.WHAT, _torchscript.sniff,
           read=_torchscript.read, scan=_torchscript.scan),
    Reader("onnx", _onnx.EXTENSIONS, _onnx.WHAT, _onnx.sniff, scan=_onnx.scan),
    Reader("keras", _keras.EXTENSIONS, _keras.WHAT, _keras.sniff, scan=_keras.scan),
)
VOCABULARIES: tuple[Vocabulary, ...] = (
    Vocabulary("pytorch", _torch_modules.select, _pytorch.from_torch_state_dict,
               _pytorch.diagnose, _torch_modules.scan),
    Vocabulary("foreign", _foreign.select, _foreign.to_params, _foreign.diagnose,
               _foreign.scan),
)
_EXTENSIONS = tuple(ext for r in READERS for ext in r.extensions)
#: Formats read under any extension (torch.jit.save writes .pt, .jit, .zip, ...), sniffed.
_ANY_EXTENSION = ("torchscript",)


def _sniffed(path: Path, any_format: bool = False) -> Reader | None:
    """The reader of a format read under any extension (:data:`_ANY_EXTENSION`; with
    ``any_format``, of every format) when the file at ``path`` is in it; None else, or when
    it cannot be opened (the usual checks then say why)."""
    if not os.path.isfile(path):
        return None
    try:
        with open_regular(path, "model") as (fh, _):
            kind = recognise(fh, READERS)
    except (GateflowError, OSError):
        return None
    return next((r for r in READERS if r.name == kind.label
                 and (any_format or r.name in _ANY_EXTENSION)), None)


def by_content(path: Path) -> str | None:
    """One line saying that ``path`` was read by its content, when its extension is none
    that gateflow knows (a shipped ``weights``, ``.hdf5``, ``.sdict``); None else."""
    ext = path.suffix.lower()
    reader = reader_for(path)
    if ext in reader.extensions or reader.name in _ANY_EXTENSION:
        return None
    why = (f"{ext!r} is not an extension gateflow knows" if ext else
           "the file has no extension")
    return f"{show(path)} read as {reader.what} by its content ({why})"


def reader_for(path: Path, what: str = "params") -> Reader:
    """The reader of ``path``'s extension (of its content, for a TorchScript archive or a
    file whose extension gateflow does not know: a shipped ``weights`` or ``.hdf5``); a
    GateflowError listing the known ones else."""
    sniffed = _sniffed(path)
    if sniffed is not None:
        return sniffed
    ext = path.suffix.lower()
    for reader in READERS:
        if ext in reader.extensions:
            return reader
    sniffed = None if ext in _EXTENSIONS else _sniffed(path, any_format=True)
    if sniffed is not None:
        return sniffed
    if os.path.isdir(path):
        raise GateflowError(f"cannot read {what} from {clip(repr(str(path)), 80)}: it is a "
                            f"folder; give the {'weights' if what == 'params' else what} file")
    raise GateflowError(f"cannot read {what} from {clip(repr(str(path)), 80)}: unknown "
                        f"extension {clip(repr(ext or '(none)'), 40)}; use one of "
                        f"{', '.join(_EXTENSIONS)}")


def _open(path: Path, reader: Reader, what: str = "params"):
    """Open ``path`` for ``reader``, its real format checked against its extension."""
    ext = path.suffix.lower()
    return open_regular(path, what), parsing(path, ext, "re-export the file"), Kind(
        reader.name, reader.what, ext)


def read_arrays(path: Path, what: str = "params") -> Arrays:
    """The raw arrays of a weights file: extension, file type and real format checked
    before anything is parsed, sizes checked before anything is allocated."""
    reader = reader_for(path, what)
    if reader.read is None:
        raise GateflowError(f"{clip(repr(str(path)), 80)} is {reader.what}, a whole model: "
                            "read it with gateflow.load_model (or `gateflow inspect`)")
    opened, guard, kind = _open(path, reader, what)
    with opened as (fh, size), guard:
        check_format(path, recognise(fh, READERS), kind, _EXTENSIONS,
                     "save the weights with safetensors, np.savez or torch.save")
        return reader.read(fh, size, path)


def _found(*parts: Found | tuple[Recurrent, ...]) -> Found:
    """Several readers' or vocabularies' findings as one :class:`Found`."""
    modules: list[Recurrent] = []
    skipped: list[str] = []
    for part in parts:
        if isinstance(part, Found):
            modules += part.modules
            skipped += part.skipped
        else:
            modules += part
    return Found(tuple(modules), tuple(dict.fromkeys(skipped)))


def _read_models(path: Path, what: str, rename) -> Found:
    reader = reader_for(path, what)
    if rename is not None:
        if reader.read is None:
            raise GateflowError(f"{arg('rename')} renames arrays of .npz, .safetensors, .pt files; "
                                f"{clip(repr(str(path)), 80)} is {reader.what}, whose modules "
                                "are named by the model itself")
        renamed = _foreign.rename(read_arrays(path, what), rename, clip(repr(path.name), 60))
        return _found(*(v.scan(renamed) for v in VOCABULARIES))
    if reader.scan is None:
        raw = read_arrays(path, what)
        return _found(*(v.scan(raw) for v in VOCABULARIES))
    opened, guard, kind = _open(path, reader, what)
    with opened as (fh, size), guard:
        check_format(path, recognise(fh, READERS), kind, _EXTENSIONS,
                     "export the model again")
        return _found(reader.scan(fh, size, path))


def read_models(path: Path, what: str = "model", rename=None) -> Found:
    """Every recurrent module a weights or model file holds (PyTorch modules in any array
    container, ONNX nodes, Keras layers), in the file's order, with one line for each thing
    that was skipped (:class:`Found`; it iterates over the modules). ``rename`` maps the
    arrays' names first (:func:`._foreign.rename`; array containers only). A file read by
    its content, its extension unknown, says so in each module's ``assumed``."""
    found = _read_models(path, what, rename)
    note = by_content(path)
    if note is None:
        return found
    return Found(tuple(replace(m, assumed=(note, *m.assumed)) for m in found.modules),
                 found.skipped)
