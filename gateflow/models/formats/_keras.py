"""Keras: the ``.keras`` / ``.h5`` reader, one :class:`Recurrent` per recurrent layer.

Read with ``zipfile``, ``json`` and ``h5py`` only: Keras and TensorFlow are never imported,
nothing is unpickled, and nothing in the file is run (``Lambda`` layers and custom objects
are names in a JSON config, skipped). Three kinds of file:

* a Keras 3 ``.keras`` archive: ``config.json`` names the layers, ``model.weights.h5`` holds
  them. Keras 3 files a model's layers under ``layers/<class in snake case>`` (``lstm``,
  ``lstm_1``, ... in the order of ``model.layers``; a Sequential's InputLayer is not one of
  them), and the weights group's ``vars`` attribute ``name`` says the layer's name, which is
  checked when present. A layer's cell holds ``cell/vars/0..2`` (kernel, recurrent kernel,
  bias); a Bidirectional layer has ``forward_layer/cell/vars`` and ``backward_layer/...``.
  Nested models (a Sequential inside a Functional) are walked; their layers are named
  ``outer/inner``.
* a Keras 3 ``.weights.h5`` (no config): the kind is inferred from the variable shapes,
  and the ``note`` says so.
* a legacy Keras 2 / tf.keras ``.h5``: the root attribute ``model_config`` (JSON) names the
  layers, ``model_weights/<layer>`` holds each one's weights, listed in its
  ``weight_names`` attribute (``lstm/lstm_cell/kernel:0``). A legacy weights-only ``.h5``
  (``layer_names`` at the root, no config) is read from its shapes.

Keras computes ``x @ kernel``: gateflow's ``W = kernel[:, gate].T``, ``U =
recurrent_kernel[:, gate].T``. Gate orders: LSTM i, f, c, o (Keras's c is gateflow's g);
GRU z, r, h. A GRU with ``reset_after=True`` (bias (2, 3n): input row, recurrent row) is
cell ``gru`` (b_z, b_r: both rows summed; b_in: row 0; b_hn: row 1); ``reset_after=False``
(bias (3n,)) is Cho's form, cell ``gru-cho`` (b_in = b_h, b_hn = 0). SimpleRNN is ``rnn``
(tanh) or ``rnn-relu``. ``use_bias=False`` gives zero biases. Only the default activations
are read (tanh, and sigmoid for the gates); a layer with others is refused by name.
``go_backwards=True`` is the direction ``"reverse"``.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gateflow._errors import GateflowError
from gateflow.cells._library import CELLS
from gateflow.cells._params import check_params
from gateflow.models._checks import clip, one_line
from gateflow.models.formats._files import fits, show
from gateflow.models.formats._recurrent import Recurrent

__all__ = ["EXTENSIONS", "WHAT", "scan", "sniff"]

WHAT = "a Keras model"
EXTENSIONS = (".keras", ".h5")  # ".weights.h5" files end in .h5 too
_HDF5 = b"\x89HDF\r\n\x1a\n"
_ARCHIVE = "a Keras 3 .keras archive"
_CONFIG, _WEIGHTS = "config.json", "model.weights.h5"
_FIX = "re-save the model with model.save('model.keras')"
_DEPTH = 32  # nested models deeper than this are refused (a hostile config)
_MAX_RATIO = 1100  # deflate never inflates more than 1032:1; a member claiming more lies
_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}
_CELL_CLASSES = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
_MODELS = ("Sequential", "Functional", "Model")
_LSTM = (("i", 0), ("f", 1), ("g", 2), ("o", 3))
_GRU = (("z", 0), ("r", 1), ("n", 2))


def sniff(head: bytes, members: Sequence[str] | None) -> str | None:
    """A zip archive holding ``config.json`` and ``model.weights.h5``, or an HDF5 file."""
    if members is not None:
        return _ARCHIVE if {_CONFIG, _WEIGHTS} <= set(members) else None
    return "an HDF5 file" if head.startswith(_HDF5) else None


# -- what a layer holds, before it becomes a record ---------------------------------------
@dataclass(frozen=True)
class _Side:
    """One direction's variables: kernel (d, G·n), recurrent kernel (n, G·n), bias."""

    kernel: np.ndarray
    recurrent: np.ndarray
    bias: np.ndarray | None


@dataclass(frozen=True)
class _Layer:
    """A recurrent layer found in a file: its family (``"LSTM"``, ``"GRU"``,
    ``"SimpleRNN"``), its config when the file has one, its directions' variables."""

    module: str
    kind: str
    family: str
    config: dict | None
    sides: dict[str, _Side]  # direction -> variables
    note: str = ""


def _invalid(path: Path, why: str) -> GateflowError:
    return GateflowError(f"cannot read {show(path)}: not a valid Keras file ({clip(why, 160)}); "
                         f"{_FIX}")


def _h5py(path: Path):
    try:
        import h5py
    except ImportError:
        raise GateflowError(f"reading {show(path)} needs h5py; install it with "
                            "pip install 'gateflow[keras]'") from None
    return h5py


def scan(fh: BinaryIO, size: int, path: Path) -> tuple[Recurrent, ...]:
    """Every LSTM, GRU and SimpleRNN layer of a Keras file (Bidirectional ones included),
    with its weights read and checked; non-recurrent layers are skipped."""
    h5py = _h5py(path)
    fh.seek(0)
    head = fh.read(len(_HDF5))
    fh.seek(0)
    try:
        if head.startswith(b"PK"):
            layers = _scan_archive(h5py, fh, size, path)
        elif head.startswith(_HDF5):
            with h5py.File(fh, "r") as f:
                layers = _scan_hdf5(f, path)
        else:
            raise _invalid(path, "neither a .keras zip archive nor an HDF5 file")
        return tuple(_record(layer, path) for layer in layers)
    except GateflowError:
        raise
    except Exception as exc:  # zipfile, zlib, h5py (OSError, KeyError), json, recursion
        raise _invalid(path, f"{type(exc).__name__}: {one_line(exc, 120)}") from None


# -- containers ---------------------------------------------------------------------------
def _scan_archive(h5py, fh: BinaryIO, size: int, path: Path) -> list[_Layer]:
    """A .keras zip: its config and weights members, sizes checked before inflating."""
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        for want in (_CONFIG, _WEIGHTS):
            if want not in names:
                raise _invalid(path, f"the archive has no {want} member")
            if names.count(want) > 1:
                raise _invalid(path, f"the archive holds {want} twice")
        members = {i.filename: i for i in infos if i.filename in (_CONFIG, _WEIGHTS)}
        for info in members.values():
            _check_member(info, size, path)
        total = sum(i.file_size for i in members.values())
        fits(path, total, total // 8)
        config = json.loads(zf.read(members[_CONFIG]).decode("utf-8"))
        data = zf.read(members[_WEIGHTS])
    with h5py.File(io.BytesIO(data), "r") as f:
        if not isinstance(config, dict):
            raise _invalid(path, f"{_CONFIG} holds a {type(config).__name__}, not a model")
        return _keras3_model(config, f, path)


def _check_member(info: zipfile.ZipInfo, size: int, path: Path) -> None:
    """Refuse a member whose declared sizes cannot be true (a zip bomb's disguise)."""
    lie = (info.compress_size > size
           or (info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size)
           or info.file_size > _MAX_RATIO * info.compress_size + 1024)
    if lie:
        raise _invalid(path, f"member {info.filename!r} declares {info.file_size} bytes from "
                             f"{info.compress_size} compressed, which cannot be true")


def _scan_hdf5(f, path: Path) -> list[_Layer]:
    """A bare HDF5 file: legacy full model, legacy weights, or Keras 3 ``.weights.h5``."""
    if "model_config" in f.attrs:
        config = json.loads(_text(f.attrs["model_config"]))
        if "model_weights" not in f:
            raise _invalid(path, "it has a model_config but no model_weights group")
        if not isinstance(config, dict):
            raise _invalid(path, "its model_config is not a JSON object")
        return list(_legacy_model(config, f["model_weights"], path))
    if "layer_names" in f.attrs:
        return list(_legacy_weights(f, path))
    return list(_keras3_inferred(f, "", path, 0))


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# -- reading variables --------------------------------------------------------------------
def _array(ds, path: Path, what: str) -> np.ndarray:
    """A dataset as float64, its size checked before it is read (HDF5 can compress)."""
    if not hasattr(ds, "shape") or ds.shape is None:
        raise _invalid(path, f"{what} is not an array")
    dtype, count = ds.dtype, int(np.prod(ds.shape, dtype=object))
    bf16 = dtype.kind == "V" and dtype.itemsize == 2 and _text(
        ds.attrs.get("dtype", "")) == "bfloat16"
    if dtype.kind != "f" and not bf16:
        raise GateflowError(f"cannot read {show(path)}: {clip(what, 80)} has dtype {dtype}; "
                            "Keras weights must be floating point")
    fits(path, count * dtype.itemsize, count)
    raw = np.asarray(ds[()])
    if bf16:  # Keras stores bfloat16 as raw 2-byte words: the top half of a float32
        raw = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float64)


def _side(arrays: Sequence[np.ndarray], path: Path, where: str) -> _Side:
    if len(arrays) not in (2, 3):
        raise _invalid(path, f"{where} holds {len(arrays)} variables, not kernel, "
                             "recurrent_kernel and bias")
    return _Side(arrays[0], arrays[1], arrays[2] if len(arrays) == 3 else None)


def _vars(group, path: Path, where: str) -> _Side:
    """A Keras 3 ``vars`` group: datasets ``0``, ``1`` (and ``2``) in that order."""
    keys = sorted(group.keys(), key=lambda k: (len(k), k))
    if keys not in (["0", "1"], ["0", "1", "2"]):
        raise _invalid(path, f"{where} holds variables {clip(repr(keys), 60)}, not 0, 1, 2")
    return _side([_array(group[k], path, f"{where}/{k}") for k in keys], path, where)


def _cell_vars(group, path: Path, where: str) -> _Side | None:
    """The variables of a layer group's ``cell/vars``, or None when it has none."""
    if "cell" not in group or "vars" not in group["cell"] or not len(group["cell"]["vars"]):
        return None
    return _vars(group["cell"]["vars"], path, f"{where}/cell/vars")


# -- Keras 3: config.json with model.weights.h5 -------------------------------------------
def _snake(name: str) -> str:
    """Keras 3's ``to_snake_case``: how it files a layer of class ``name``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _vars_name(group) -> str | None:
    """The layer name recent Keras 3 versions write on a weights group's ``vars``."""
    if "vars" not in group:
        return None
    name = group["vars"].attrs.get("name")
    return None if name is None else _text(name)


def _container(group):
    """A model's layer container: ``layers`` (``_layer_checkpoint_dependencies`` in the
    files tf.keras 2.13 wrote in the .keras format)."""
    for key in ("layers", "_layer_checkpoint_dependencies"):
        if key in group:
            return group[key]
    return None


def _layer_items(config: dict) -> list | None:
    """The layer configs of a model config, or None when it lists no layers."""
    inner = config.get("config")
    if isinstance(inner, list):  # Keras 2.0-2.2 Sequential: the list itself
        return inner
    if isinstance(inner, dict) and isinstance(inner.get("layers"), list):
        return inner["layers"]
    return None


def _name(item: dict) -> str:
    conf = item.get("config")
    name = conf.get("name") if isinstance(conf, dict) else None
    name = name if isinstance(name, str) else item.get("name")
    if not isinstance(name, str):
        raise ValueError(f"a {clip(str(item.get('class_name')), 40)} layer has no name")
    return name


def _keras3_model(config: dict, f, path: Path) -> list[_Layer]:
    items = _layer_items(config)
    if items is None or _container(f) is None:  # a subclassed model: only shapes tell
        return list(_keras3_inferred(f, "", path, 0))
    return list(_keras3_walk(config, f, "", path, 0))


def _keras3_walk(config: dict, group, prefix: str, path: Path, depth: int) -> Iterator[_Layer]:
    if depth > _DEPTH:
        raise _invalid(path, f"models are nested more than {_DEPTH} deep")
    items, container = _layer_items(config) or [], _container(group)
    if container is None:
        return
    sequential = config.get("class_name") == "Sequential"
    used: dict[str, int] = {}
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("a layer config is not a JSON object")
        cls = str(item.get("class_name"))
        if sequential and cls == "InputLayer":
            continue  # Sequential.layers leaves it out
        key = _unique(_snake(cls), used)
        name = _name(item)
        sub = _find(container, key, name)
        module = f"{prefix}{name}"
        if _layer_items(item) is not None:
            if sub is not None:
                yield from _keras3_walk(item, sub, f"{module}/", path, depth + 1)
            continue
        unit = _unit(item)
        if unit is None:
            continue
        if sub is None:
            raise _invalid(path, f"layer {module!r} has no weights group (expected "
                                 f"layers/{key})")
        yield _keras3_layer(item, unit, sub, module, path)


def _unique(name: str, used: dict[str, int]) -> str:
    """Keras 3's ``_get_unique_name``: ``lstm``, ``lstm_1``, ``lstm_2``, ..."""
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _find(container, key: str, name: str):
    """The weights group of layer ``name``, filed under ``key``; by its recorded name when
    the file records names and the two disagree."""
    group = container.get(key)
    if group is not None and _vars_name(group) in (None, name):
        return group
    for child in container.values():
        if _vars_name(child) == name:
            return child
    return group


def _builtin(item: dict) -> bool:
    """A Keras layer or cell, not a custom class that took a built-in's name."""
    registered = item.get("registered_name")
    return registered in (None, item.get("class_name"))


def _unit(item: dict) -> tuple[str, str, dict, dict | None] | None:
    """(family, kind, cell config, backward config or None) for the layers gateflow reads:
    LSTM, GRU, SimpleRNN, RNN of one of their cells, and Bidirectional of those."""
    cls, conf = item.get("class_name"), item.get("config")
    if not _builtin(item) or not isinstance(conf, dict):
        return None
    if cls in _GATES:
        return str(cls), f"{cls} layer", conf, None
    if cls == "RNN":
        cell = conf.get("cell")
        if isinstance(cell, dict) and cell.get("class_name") in _CELL_CLASSES and _builtin(cell):
            cell_conf = cell.get("config")
            merged = {**(cell_conf if isinstance(cell_conf, dict) else {}),
                      "go_backwards": conf.get("go_backwards", False)}
            return _CELL_CLASSES[cell["class_name"]], f"RNN({cell['class_name']}) layer", \
                merged, None
        return None
    if cls == "Bidirectional":
        inner = conf.get("layer")
        found = _unit(inner) if isinstance(inner, dict) else None
        if found is None or found[3] is not None:
            return None
        family, kind, fwd, _ = found
        back = conf.get("backward_layer")
        back_found = _unit(back) if isinstance(back, dict) else None
        if back_found is not None and back_found[0] == family:
            bwd = back_found[2]
        else:  # Keras builds it from the forward layer, running the other way
            bwd = {**fwd, "go_backwards": not fwd.get("go_backwards", False)}
        return family, f"Bidirectional({kind.removesuffix(' layer')}) layer", fwd, bwd
    return None


def _direction(conf: dict) -> str:
    return "reverse" if conf.get("go_backwards") else "forward"


def _keras3_layer(item: dict, unit, group, module: str, path: Path) -> _Layer:
    family, kind, fwd, bwd = unit
    if bwd is None:
        side = _cell_vars(group, path, module)
        if side is None:
            raise _invalid(path, f"layer {module!r} has no cell/vars weights")
        return _Layer(module, kind, family, fwd, {_direction(fwd): side})
    sides = {}
    for key, conf in (("forward_layer", fwd), ("backward_layer", bwd)):
        side = _cell_vars(group[key], path, f"{module}/{key}") if key in group else None
        if side is None:
            raise _invalid(path, f"layer {module!r} has no {key}/cell/vars weights")
        sides[_direction(conf)] = side
    if len(sides) != 2:
        raise _invalid(path, f"both halves of layer {module!r} run the same way")
    return _Layer(module, kind, family, fwd, sides)


# -- no config: the kind inferred from shapes ---------------------------------------------
_INFERRED = "kind inferred from the variable shapes (the file has no config)"


def _keras3_inferred(group, prefix: str, path: Path, depth: int) -> Iterator[_Layer]:
    """Every recurrent layer of a Keras 3 weights tree, from the shapes of its variables."""
    if depth > _DEPTH:
        raise _invalid(path, f"models are nested more than {_DEPTH} deep")
    container = _container(group)
    if container is None:
        return
    for key, sub in container.items():
        if not hasattr(sub, "keys"):
            continue
        name = f"{prefix}{_vars_name(sub) or key}"
        if "forward_layer" in sub and "backward_layer" in sub:
            fwd = _cell_vars(sub["forward_layer"], path, f"{name}/forward_layer")
            bwd = _cell_vars(sub["backward_layer"], path, f"{name}/backward_layer")
            if fwd is None or bwd is None:
                continue
            family = _family(fwd)
            if family is not None and family == _family(bwd):
                yield _Layer(name, f"Bidirectional({family}) layer", family, None,
                             {"forward": fwd, "reverse": bwd}, _INFERRED)
        elif "cell" in sub:
            side = _cell_vars(sub, path, name)
            family = None if side is None else _family(side)
            if family is not None and side is not None:
                yield _Layer(name, f"{family} layer", family, None, {"forward": side},
                             f"{_INFERRED}; a layer built with go_backwards=True reads as "
                             "forward")
        elif _container(sub) is not None:
            yield from _keras3_inferred(sub, f"{name}/", path, depth + 1)


def _family(side: _Side) -> str | None:
    """LSTM, GRU or SimpleRNN from the variable shapes alone; None when they fit none."""
    k, r, b = side.kernel, side.recurrent, side.bias
    if k.ndim != 2 or r.ndim != 2 or r.shape[0] == 0 or r.shape[1] % r.shape[0]:
        return None
    g = r.shape[1] // r.shape[0]
    family = {4: "LSTM", 3: "GRU", 1: "SimpleRNN"}.get(g)
    if family is None or k.shape[1] != r.shape[1]:
        return None
    biases = [(r.shape[1],)] + ([(2, r.shape[1])] if g == 3 else [])
    return family if b is None or b.shape in biases else None


# -- legacy Keras 2 / tf.keras .h5 --------------------------------------------------------
def _legacy_model(config: dict, weights, path: Path, prefix: str = "", top=None,
                  depth: int = 0) -> Iterator[_Layer]:
    """The recurrent layers of a legacy model config, weights from ``model_weights``: each
    top-level layer's group lists its variables in ``weight_names``; a nested model's group
    lists all of its layers' variables, told apart by their first name component."""
    if depth > _DEPTH:
        raise _invalid(path, f"models are nested more than {_DEPTH} deep")
    for item in _layer_items(config) or []:
        if not isinstance(item, dict):
            raise ValueError("a layer config is not a JSON object")
        name = _name(item)
        group = top if top is not None else (weights[name] if name in weights else None)
        if group is None:
            continue
        if _layer_items(item) is not None:
            yield from _legacy_model(item, weights, path, f"{prefix}{name}/", group, depth + 1)
            continue
        unit = _unit(item)
        if unit is None:
            continue
        names = _weight_names(group)
        if top is not None:
            names = [n for n in names if n.split("/")[0] == name]
        yield _legacy_layer(unit, group, names, f"{prefix}{name}", path)


def _weight_names(group) -> list[str]:
    return [_text(n) for n in group.attrs.get("weight_names", [])]


def _legacy_layer(unit, group, names: list[str], module: str, path: Path) -> _Layer:
    family, kind, fwd, bwd = unit
    if bwd is None:
        return _Layer(module, kind, family, fwd, {_direction(fwd): _legacy_side(
            group, names, module, path)})
    halves = _halves(names)
    sides = {_direction(fwd): _legacy_side(group, halves[0], f"{module} (forward)", path),
             _direction(bwd): _legacy_side(group, halves[1], f"{module} (backward)", path)}
    if len(sides) != 2:
        raise _invalid(path, f"both halves of layer {module!r} run the same way")
    return _Layer(module, kind, family, fwd, sides)


def _halves(names: list[str]) -> tuple[list[str], list[str]]:
    """A Bidirectional layer's variables: forward ones, then backward ones (Keras 2 names
    them ``forward_lstm/...`` and ``backward_lstm/...``; else the order says)."""
    def side(n: str) -> str | None:
        parts = n.split("/")
        if any(p.startswith("forward_") for p in parts):
            return "forward"
        if any(p.startswith("backward_") for p in parts):
            return "backward"
        return None
    fwd = [n for n in names if side(n) == "forward"]
    bwd = [n for n in names if side(n) == "backward"]
    if fwd and bwd and len(fwd) + len(bwd) == len(names):
        return fwd, bwd
    half = len(names) // 2
    return names[:half], names[half:]


def _legacy_side(group, names: list[str], where: str, path: Path) -> _Side:
    """kernel, recurrent_kernel and bias by the last part of their names (``:0`` dropped)."""
    by_role: dict[str, str] = {}
    for n in names:
        role = n.rsplit("/", 1)[-1].split(":")[0]
        if role not in ("kernel", "recurrent_kernel", "bias") or role in by_role:
            raise _invalid(path, f"layer {where!r} holds variable {n!r}; expected kernel, "
                                 "recurrent_kernel and bias (a Keras 1 file?)")
        by_role[role] = n
    if "kernel" not in by_role or "recurrent_kernel" not in by_role:
        raise _invalid(path, f"layer {where!r} lacks its kernel or recurrent_kernel")
    arrays = [_array(group[by_role[r]], path, f"{where} {r}")
              for r in ("kernel", "recurrent_kernel", "bias") if r in by_role]
    return _side(arrays, path, where)


def _legacy_weights(f, path: Path) -> Iterator[_Layer]:
    """A legacy weights-only .h5 (``save_weights``): one group per layer, kind from shapes."""
    for raw in f.attrs["layer_names"]:
        name = _text(raw)
        if name not in f:
            continue
        names = _weight_names(f[name])
        roles = [n.rsplit("/", 1)[-1].split(":")[0] for n in names]
        if "recurrent_kernel" not in roles:
            continue
        if roles.count("recurrent_kernel") == 2:
            halves = _halves(names)
            fwd = _legacy_side(f[name], halves[0], f"{name} (forward)", path)
            bwd = _legacy_side(f[name], halves[1], f"{name} (backward)", path)
            family = _family(fwd)
            if family is not None and family == _family(bwd):
                yield _Layer(name, f"Bidirectional({family}) layer", family, None,
                             {"forward": fwd, "reverse": bwd}, _INFERRED)
        else:
            side = _legacy_side(f[name], names, name, path)
            family = _family(side)
            if family is not None:
                yield _Layer(name, f"{family} layer", family, None, {"forward": side},
                             f"{_INFERRED}; a layer built with go_backwards=True reads as "
                             "forward")


# -- the record ---------------------------------------------------------------------------
def _activation(value) -> str:
    """An activation as the config names it: a string, or a serialized function."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        conf, name = value.get("config"), value.get("registered_name")
        if isinstance(conf, str) and str(value.get("module", "")).startswith("keras"):
            return conf
        return f"custom {clip(str(name or conf or value.get('class_name')), 60)}"
    return clip(repr(value), 60)


def _check_activations(layer: _Layer) -> None:
    """Refuse an LSTM or GRU layer whose config names other than the default activations."""
    conf = layer.config
    if conf is None or layer.family == "SimpleRNN":
        return
    for what, want in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        got = _activation(conf.get(what, want))
        if got != want:
            old = " (old Keras's default)" if got == "hard_sigmoid" else ""
            raise GateflowError(f"Keras layer {layer.module!r} ({layer.kind}) uses {what} "
                                f"{got!r}{old}; gateflow reads {layer.family} layers with "
                                "activation 'tanh' and recurrent_activation 'sigmoid' only")


def _rnn_cell(layer: _Layer) -> str | None:
    """``rnn`` or ``rnn-relu`` by a SimpleRNN's activation; None without a config."""
    if layer.config is None:
        return None
    act = _activation(layer.config.get("activation", "tanh"))
    cell = {"tanh": "rnn", "relu": "rnn-relu"}.get(act)
    if cell is None:
        raise GateflowError(f"Keras layer {layer.module!r} ({layer.kind}) uses activation "
                            f"{act!r}; gateflow reads SimpleRNN layers with activation "
                            "'tanh' (cell rnn) or 'relu' (cell rnn-relu) only")
    return cell


def _check_shapes(layer: _Layer, path: Path) -> tuple[int, int]:
    """(n, d) of a layer whose every direction has well-shaped variables."""
    g, sizes = _GATES[layer.family], set()
    units = layer.config.get("units") if layer.config else None
    for direction, s in layer.sides.items():
        k, r, b = s.kernel, s.recurrent, s.bias
        n = r.shape[0] if r.ndim == 2 else 0
        d = k.shape[0] if k.ndim == 2 else 0
        biases = [(g * n,)] + ([(2, g * n)] if layer.family == "GRU" else [])
        if (n < 1 or d < 1 or r.shape != (n, g * n) or k.shape != (d, g * n)
                or (b is not None and b.shape not in biases)
                or (isinstance(units, int) and units != n)):
            shapes = ", ".join(str(a.shape) for a in (k, r, b) if a is not None)
            raise GateflowError(f"cannot read {show(path)}: Keras layer {layer.module!r} "
                                f"({direction}) has variables of shapes {shapes}, not those of "
                                f"a {layer.family} (kernel (d, {g}n), recurrent_kernel "
                                f"(n, {g}n), bias ({g}n,)); {_FIX}")
        sizes.add((n, d))
    if len(sizes) != 1:
        raise _invalid(path, f"the halves of layer {layer.module!r} differ in size")
    return sizes.pop()


def _gru_cell(layer: _Layer, path: Path) -> str | None:
    """``gru`` (reset after, bias (2, 3n)) or ``gru-cho`` (reset before, bias (3n,)); None
    when neither the config nor the bias tells."""
    biases = {None if s.bias is None else s.bias.ndim for s in layer.sides.values()}
    said = layer.config.get("reset_after") if layer.config else None
    if isinstance(said, bool):
        if (2 if said else 1) not in biases and None not in biases:
            raise _invalid(path, f"layer {layer.module!r} says reset_after={said} but its "
                                 "bias does not have that shape")
        return "gru" if said else "gru-cho"
    if biases == {2}:
        return "gru"
    if biases == {1}:
        return "gru-cho"
    return "gru-cho" if layer.config is not None and biases == {None} else None


def _cells(layer: _Layer, path: Path) -> tuple[str | None, tuple[str, ...], str]:
    """(cell, cells, note): the cell the file says, every cell the weights fit, and what
    a user must know when the file cannot tell."""
    _check_activations(layer)
    if layer.family == "LSTM":
        return "lstm", ("lstm",), layer.note
    if layer.family == "GRU":
        cell, fits_all, why = _gru_cell(layer, path), ("gru", "gru-cho"), (
            "a GRU without bias has no sign of reset_after: give --cell gru "
            "(reset_after=True) or gru-cho")
    else:
        cell, fits_all, why = _rnn_cell(layer), ("rnn", "rnn-relu"), (
            "the activation is not in a .weights.h5 file: give --cell")
    if cell is not None:
        return cell, (cell,), layer.note
    return None, fits_all, "; ".join(filter(None, (layer.note, why)))


def _record(layer: _Layer, path: Path) -> Recurrent:
    n, d = _check_shapes(layer, path)
    cell, cells, note = _cells(layer, path)
    directions = tuple(sorted(layer.sides, key=("forward", "reverse").index))
    return Recurrent(module=layer.module, framework="Keras", kind=layer.kind, cell=cell,
                     cells=cells, layers=1, directions=directions, hidden=n, input=d,
                     weights=_weights_of(layer, cells), note=note)


def _weights_of(layer: _Layer, cells: tuple[str, ...]):
    def weights(cell: str, index: int, direction: str) -> dict[str, np.ndarray]:
        if index != 0:
            raise GateflowError(f"Keras layer {layer.module!r} has one layer (0), not {index!r}")
        if direction not in layer.sides:
            raise GateflowError(f"Keras layer {layer.module!r} runs {' and '.join(layer.sides)}, "
                                f"not {direction!r}")
        if cell not in cells:
            raise GateflowError(f"Keras layer {layer.module!r} ({layer.kind}) fits cell "
                                f"{' or '.join(map(repr, cells))}, not {cell!r}")
        params = _params(cell, layer.sides[direction])
        check_params(cell, params)
        return params
    return weights


def _params(cell: str, side: _Side) -> dict[str, np.ndarray]:
    """gateflow's parameters from one direction's Keras variables."""
    k, r, b = side.kernel, side.recurrent, side.bias
    n = r.shape[0]

    def gate(a: np.ndarray, j: int) -> np.ndarray:
        return np.ascontiguousarray(a[..., j * n:(j + 1) * n], dtype=np.float64)

    zero = np.zeros(n)
    out: dict[str, Any]
    if cell == "lstm":
        out = {}
        for g, j in _LSTM:
            out[f"W_{g}"], out[f"U_{g}"] = gate(k, j).T, gate(r, j).T
            out[f"b_{g}"] = zero.copy() if b is None else gate(b, j)
    elif cell in ("gru", "gru-cho"):
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
            for name in CELLS[cell].params}
