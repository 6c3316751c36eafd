"""Keras: the ``.keras`` / ``.h5`` reader, one :class:`Recurrent` per recurrent layer.

Read with ``zipfile``, ``json`` and ``h5py`` only: Keras and TensorFlow are never imported,
nothing is unpickled, and nothing in the file is run (``Lambda`` layers and custom objects
are names in a JSON config, skipped). Three kinds of file:

* a ``.keras`` archive: ``config.json`` names the layers, ``model.weights.h5`` holds them,
  ``metadata.json`` says the Keras version that wrote it;
* a ``.weights.h5`` of the same layout, without a config;
* a legacy Keras 2 / tf.keras ``.h5``: the root attribute ``model_config`` (JSON) names the
  layers, ``model_weights/<layer>`` holds them; a weights-only one (``save_weights``) has
  ``layer_names`` at the root. Both record the writer's ``keras_version``.

The layers a config names are found by :mod:`._keras_layers`, their variables read and
layers without a config inferred from shapes by :mod:`._keras_vars`, their activations and
cell chosen by :mod:`._keras_config` (from the config, or the defaults of the Keras that
wrote the file, said in the record's ``assumed`` lines). This module opens the containers
and maps the variables onto gateflow's names.

Keras computes ``x @ kernel``: gateflow's ``W = kernel[:, gate].T``, ``U =
recurrent_kernel[:, gate].T``. Gate orders: LSTM i, f, c, o (Keras's c is gateflow's g);
GRU z, r, h. A GRU with ``reset_after=True`` (bias (2, 3n): input row, recurrent row) is
cell ``gru`` (b_z, b_r: both rows summed; b_in: row 0; b_hn: row 1); ``reset_after=False``
(bias (3n,)) is Cho's form, cell ``gru-cho`` (b_in = b_h, b_hn = 0). SimpleRNN is ``rnn``
(tanh) or ``rnn-relu``. ``use_bias=False`` gives zero biases. ``go_backwards=True`` is the
direction ``"reverse"``. tf.keras 1/2's ``CuDNNLSTM`` (bias (8n,): input row, recurrent
row, summed) and ``CuDNNGRU`` (bias (6n,): the reset-after form's two rows) are ``lstm``
and ``gru``, sigmoid and tanh always. Every Keras layer reads (batch, time, features):
``layout="batch-major"`` (``time_major=True``, a tf.keras 2 option: ``"time-major"``).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gateflow._errors import GateflowError
from gateflow.cells._activations import parse_name
from gateflow.cells._library import CELLS
from gateflow.cells._params import check_params
from gateflow.models._checks import clip, one_line
from gateflow.models.formats._files import fits, show
from gateflow.models.formats._keras_config import Writer, choose, precision_notes
from gateflow.models.formats._keras_layers import keras3_model, legacy_model
from gateflow.models.formats._keras_vars import (
    FIX,
    GATES,
    Layer,
    Side,
    as_text,
    check_self_contained,
    invalid,
    keras3_inferred,
    legacy_weights,
    shapes_text,
)
from gateflow.models.formats._recurrent import Found, Recurrent

__all__ = ["EXTENSIONS", "WHAT", "scan", "sniff"]

WHAT = "a Keras model"
EXTENSIONS = (".keras", ".h5")  # ".weights.h5" files end in .h5 too
_HDF5 = b"\x89HDF\r\n\x1a\n"
_ARCHIVE = "a Keras 3 .keras archive"
_CONFIG, _WEIGHTS, _METADATA = "config.json", "model.weights.h5", "metadata.json"
_MAX_RATIO = 1100  # deflate never inflates more than 1032:1; a member claiming more lies
_LSTM = (("i", 0), ("f", 1), ("g", 2), ("o", 3))
_GRU = (("z", 0), ("r", 1), ("n", 2))


def sniff(head: bytes, members: Sequence[str] | None) -> str | None:
    """A zip archive holding ``config.json`` and ``model.weights.h5``, or an HDF5 file."""
    if members is not None:
        return _ARCHIVE if {_CONFIG, _WEIGHTS} <= set(members) else None
    return "an HDF5 file" if head.startswith(_HDF5) else None


def _h5py(path: Path):
    try:
        import h5py
    except ImportError:
        raise GateflowError(f"reading {show(path)} needs h5py; install it with "
                            "pip install 'gateflow[keras]'") from None
    return h5py


def scan(fh: BinaryIO, size: int, path: Path) -> Found:
    """Every LSTM, GRU and SimpleRNN layer of a Keras file (Bidirectional and cuDNN ones
    included), with its weights read and checked; non-recurrent layers are passed over and
    recurrent-looking ones gateflow cannot read are listed as skipped."""
    h5py = _h5py(path)
    fh.seek(0)
    head = fh.read(len(_HDF5))
    fh.seek(0)
    skipped: list[str] = []
    try:
        if head.startswith(b"PK"):
            layers, writer = _scan_archive(h5py, fh, size, path, skipped)
        elif head.startswith(_HDF5):
            with h5py.File(fh, "r") as f:
                check_self_contained(f, path, size)
                layers, writer = _scan_hdf5(f, path, skipped)
        else:
            raise invalid(path, "neither a .keras zip archive nor an HDF5 file")
        return Found(tuple(_record(layer, path, writer) for layer in layers),
                     tuple(dict.fromkeys(skipped)))
    except GateflowError:
        raise
    except Exception as exc:  # zipfile, zlib, h5py (OSError, KeyError), json, recursion
        raise invalid(path, f"{type(exc).__name__}: {one_line(exc, 120)}") from None


# -- containers ---------------------------------------------------------------------------
def _scan_archive(h5py, fh: BinaryIO, size: int, path: Path,
                  skipped: list[str]) -> tuple[list[Layer], Writer]:
    """A .keras zip: its config and weights members (and metadata.json, which says the
    Keras version), sizes checked before inflating."""
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        for want in (_CONFIG, _WEIGHTS, _METADATA):
            if names.count(want) > 1:
                raise invalid(path, f"the archive holds {want} twice")
        for want in (_CONFIG, _WEIGHTS):
            if want not in names:
                raise invalid(path, f"the archive has no {want} member")
        members = {i.filename: i for i in infos if i.filename in (_CONFIG, _WEIGHTS, _METADATA)}
        for info in members.values():
            _check_member(info, size, path)
        total = sum(i.file_size for i in members.values())
        fits(path, total, total // 8)
        config = json.loads(zf.read(members[_CONFIG]).decode("utf-8"))
        data = zf.read(members[_WEIGHTS])
        meta = json.loads(zf.read(members[_METADATA]).decode("utf-8")) \
            if _METADATA in members else None
    version = meta.get("keras_version") if isinstance(meta, dict) else None
    writer = Writer(version if isinstance(version, str) else None, "saving-lib")
    with h5py.File(io.BytesIO(data), "r") as f:
        check_self_contained(f, path, len(data), f"its member {_WEIGHTS}:")
        if not isinstance(config, dict):
            raise invalid(path, f"{_CONFIG} holds a {type(config).__name__}, not a model")
        return keras3_model(config, f, path, skipped), writer


def _check_member(info: zipfile.ZipInfo, size: int, path: Path) -> None:
    """Refuse a member whose declared sizes cannot be true (a zip bomb's disguise)."""
    lie = (info.compress_size > size
           or (info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size)
           or info.file_size > _MAX_RATIO * info.compress_size + 1024)
    if lie:
        raise invalid(path, f"member {info.filename!r} declares {info.file_size} bytes from "
                      f"{info.compress_size} compressed, which cannot be true")


def _scan_hdf5(f, path: Path, skipped: list[str]) -> tuple[list[Layer], Writer]:
    """A bare HDF5 file: legacy full model, legacy weights, or Keras 3 ``.weights.h5``."""
    if "model_config" in f.attrs:
        config = json.loads(as_text(f.attrs["model_config"]))
        if "model_weights" not in f:
            raise invalid(path, "it has a model_config but no model_weights group")
        if not isinstance(config, dict):
            raise invalid(path, "its model_config is not a JSON object")
        writer = _legacy_writer(f, f["model_weights"])
        return list(legacy_model(config, f["model_weights"], path, skipped)), writer
    if "layer_names" in f.attrs:
        return list(legacy_weights(f, path, skipped)), _legacy_writer(f)
    return list(keras3_inferred(f, "", path, 0, skipped)), Writer(None, "saving-lib")


def _legacy_writer(*groups) -> Writer:
    """The ``keras_version`` a legacy .h5 records (Keras 2 writes it at the root, and on
    ``model_weights`` too); None when it records none."""
    for group in groups:
        value = group.attrs.get("keras_version")
        if value is not None:
            return Writer(clip(as_text(value), 40), "legacy")
    return Writer(None, "legacy")


# -- the record ---------------------------------------------------------------------------
def _check_shapes(layer: Layer, path: Path) -> tuple[int, int]:
    """(n, d) of a layer whose every direction has well-shaped variables."""
    g, sizes = GATES[layer.family], set()
    units = layer.config.get("units") if layer.config else None
    for direction, s in layer.sides.items():
        k, r, b = s.kernel, s.recurrent, s.bias
        n = r.shape[0] if r.ndim == 2 else 0
        d = k.shape[0] if k.ndim == 2 else 0
        biases: list[tuple[int, ...]] = [(2 * g * n,)] if layer.cudnn else [(g * n,)]
        if layer.family == "GRU" and not layer.cudnn:
            biases.append((2, g * n))
        if (n < 1 or d < 1 or r.shape != (n, g * n) or k.shape != (d, g * n)
                or (b is not None and b.shape not in biases)
                or (isinstance(units, int) and units != n)):
            bias = f"{2 * g}n" if layer.cudnn else f"{g}n"
            raise GateflowError(f"cannot read {show(path)}: Keras layer {layer.module!r} "
                                f"({direction}) has variables of shapes {shapes_text(s)}, not "
                                f"those of a {layer.kind.removesuffix(' layer')} (kernel "
                                f"(d, {g}n), recurrent_kernel (n, {g}n), bias ({bias},)); {FIX}")
        sizes.add((n, d))
    if len(sizes) != 1:
        raise invalid(path, f"the halves of layer {layer.module!r} differ in size")
    return sizes.pop()


def _reset_after(layer: Layer, path: Path) -> bool | None:
    """A GRU's reset_after: True for the reset-after form (bias (2, 3n), or a cuDNN GRU's
    (6n,)), False for Cho's (bias (3n,)); None when neither the config nor a bias tells."""
    if layer.cudnn:
        return True
    shapes = {None if s.bias is None else s.bias.ndim for s in layer.sides.values()}
    said = layer.config.get("reset_after") if layer.config else None
    if isinstance(said, bool):
        if (2 if said else 1) not in shapes and None not in shapes:
            raise invalid(path, f"layer {layer.module!r} says reset_after={said} but its "
                          "bias does not have that shape")
        return said
    if shapes == {2}:
        return True
    if shapes == {1}:
        return False
    return None


def _record(layer: Layer, path: Path, writer: Writer) -> Recurrent:
    n, d = _check_shapes(layer, path)
    where = f"Keras layer {layer.module!r} ({layer.kind})"
    reset = _reset_after(layer, path) if layer.family == "GRU" else None
    choice = choose(layer.family, layer.config, writer, where, reset, layer.cudnn)
    if layer.back is not None and not layer.cudnn:
        back = choose(layer.family, layer.back, writer, where, reset)
        if (back.cell, back.cells) != (choice.cell, choice.cells):
            raise GateflowError(f"{where}: its backward half is cell {back.cell!r} and its "
                                f"forward half {choice.cell!r}; gateflow reads one cell per "
                                "layer")
    dtypes = frozenset().union(*(s.dtypes for s in layer.sides.values()))
    assumed = layer.assumed + choice.assumed + precision_notes(layer.config, set(dtypes))
    time_major = layer.config is not None and layer.config.get("time_major") is True
    directions = tuple(sorted(layer.sides, key=("forward", "reverse").index))
    return Recurrent(module=layer.module, framework="Keras", kind=layer.kind, cell=choice.cell,
                     cells=choice.cells, layers=1, directions=directions, hidden=n, input=d,
                     weights=_weights_of(layer, choice.cells),
                     note="; ".join(filter(None, (layer.note, choice.note))),
                     layout="time-major" if time_major else "batch-major",
                     assumed=tuple(dict.fromkeys(assumed)),
                     activations_declared=layer.config is not None or layer.cudnn)


def _family(cell: str) -> str | None:
    try:
        return parse_name(cell)[1]
    except GateflowError:
        return None


def _weights_of(layer: Layer, cells: tuple[str, ...]):
    """``weights(cell, layer, direction)``: ``cell`` one of ``cells``, or, for a layer whose
    file records no activations, any activations on the same equations (a user's --cell)."""
    free = layer.config is None and not layer.cudnn
    families = {_family(c) for c in cells}

    def weights(cell: str, index: int, direction: str) -> dict[str, np.ndarray]:
        if index != 0:
            raise GateflowError(f"Keras layer {layer.module!r} has one layer (0), not {index!r}")
        if direction not in layer.sides:
            raise GateflowError(f"Keras layer {layer.module!r} runs {' and '.join(layer.sides)}, "
                                f"not {direction!r}")
        if cell not in cells and not (free and _family(cell) in families):
            raise GateflowError(f"Keras layer {layer.module!r} ({layer.kind}) fits cell "
                                f"{' or '.join(map(repr, cells))}, not {cell!r}")
        params = _params(cell, layer.sides[direction])
        check_params(cell, params)
        return params
    return weights


def _params(cell: str, side: Side) -> dict[str, np.ndarray]:
    """gateflow's parameters from one direction's Keras variables (a variant's are its
    family's: ``lstm[gate=...]`` has lstm's)."""
    family = parse_name(cell)[1]
    k, r, b = side.kernel, side.recurrent, side.bias
    n = r.shape[0]

    def gate(a: np.ndarray, j: int) -> np.ndarray:
        return np.ascontiguousarray(a[..., j * n:(j + 1) * n], dtype=np.float64)

    zero = np.zeros(n)
    out: dict[str, Any]
    if family == "lstm":
        out = {}
        total = None if b is None else b.reshape(-1, 4 * n).sum(axis=0)  # cuDNN: two rows
        for g, j in _LSTM:
            out[f"W_{g}"], out[f"U_{g}"] = gate(k, j).T, gate(r, j).T
            out[f"b_{g}"] = zero.copy() if total is None else gate(total, j)
    elif family in ("gru", "gru-cho"):
        out = {}
        for g, j in _GRU:
            out[f"W_{g}"], out[f"U_{g}"] = gate(k, j).T, gate(r, j).T
        rows = np.zeros((2, 3 * n)) if b is None else b.reshape(-1, 3 * n)
        total = rows.sum(axis=0)
        out["b_z"], out["b_r"] = gate(total, 0), gate(total, 1)
        out["b_in"] = gate(rows[0], 2)
        out["b_hn"] = gate(rows[1], 2) if len(rows) == 2 else zero.copy()
    else:
        out = {"W": k.T, "U": r.T, "b": zero.copy() if b is None else b}
    return {name: np.ascontiguousarray(out[name], dtype=np.float64)
            for name in CELLS[family].params}
