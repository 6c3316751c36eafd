"""Keras: a recurrent layer's variables, read from HDF5 groups, and layers found from their
variables' shapes alone (a weights-only file).

A layer's variables are kernel (d, G·n), recurrent kernel (n, G·n) and bias: datasets
``0``, ``1``, ``2`` of a Keras 3 ``cell/vars`` group, or the legacy ``.h5`` datasets its
``weight_names`` attribute lists (``lstm/lstm_cell/kernel:0``). They are read as float64,
their size checked before they are read; the dtype they were stored in is kept (a bfloat16
variable is opaque 2-byte words marked ``dtype=bfloat16``: the top halves of float32s).

Without a config the shapes fix the family: G = 4 is an LSTM, 3 a GRU, 1 a SimpleRNN; a
bias of (2·G·n,) is a cuDNN layer's (input and recurrent rows end to end). What the shapes
cannot tell (activations, go_backwards) is for :mod:`._keras_config` and the record's
``assumed`` lines; groups that fit nothing are listed as skipped.

A file is read only when it holds its own bytes (:func:`check_self_contained`, before any
dataset is opened by name): HDF5 lets a file point elsewhere (external links, soft links,
external storage, virtual datasets), and following a pointer would read whatever file it
names, or block on a FIFO.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateflow._errors import GateflowError
from gateflow.models._checks import clip
from gateflow.models.formats._files import fits, show

__all__ = ["DEPTH", "FIX", "GATES", "INFERRED", "Layer", "Side", "as_text", "cell_vars",
           "check_self_contained",
           "container_of", "family_of", "halves", "invalid", "keras3_inferred", "legacy_side",
           "legacy_weights", "read_array", "read_side", "read_vars", "shapes_text",
           "stored_dtype", "vars_name", "weight_names"]

FIX = "re-save the model with model.save('model.keras')"
DEPTH = 32  # nested models deeper than this are refused (a hostile config)
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}  # blocks of n columns in a kernel


# -- what a layer holds, before it becomes a record ---------------------------------------
@dataclass(frozen=True)
class Side:
    """One direction's variables: kernel (d, G·n), recurrent kernel (n, G·n), bias."""

    kernel: np.ndarray
    recurrent: np.ndarray
    bias: np.ndarray | None
    dtypes: frozenset[str] = frozenset()  # the stored dtypes ("float32", "bfloat16", ...)


@dataclass(frozen=True)
class Layer:
    """A recurrent layer found in a file: its family (``"LSTM"``, ``"GRU"``,
    ``"SimpleRNN"``), its config when the file has one (``back``: the backward half's of a
    Bidirectional layer), its directions' variables, and whether it is a cuDNN layer."""

    module: str
    kind: str
    family: str
    config: dict | None
    sides: dict[str, Side]  # direction -> variables
    note: str = ""
    back: dict | None = None
    cudnn: bool = False
    assumed: tuple[str, ...] = ()


def invalid(path: Path, why: str) -> GateflowError:
    return GateflowError(f"cannot read {show(path)}: not a valid Keras file ({clip(why, 160)}); "
                         f"{FIX}")


def as_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# -- a file that holds its own bytes -------------------------------------------------------
_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
            6: "scaleoffset", 32000: "lzf"}  # built into HDF5 or h5py: no plugin is loaded
_MAX_LINKS = 1_000_000
_SAY = "gateflow reads only what a model file holds itself"


def check_self_contained(f, path: Path, size: int, member: str = "") -> None:
    """Refuse an HDF5 file that points at anything outside its own ``size`` bytes.

    Every link is looked at without being followed (``H5Lvisit`` never crosses a soft or
    external link): an external link or a soft link (or a link of a user-defined class) is
    refused; every dataset's creation properties are read, never its data: a virtual
    dataset, external storage, a filter HDF5 would load as a plugin, or storage (contiguous
    or chunks) that lies past the file's end is refused. Only then is anything read by name,
    so every name later resolves inside the file. ``member``: the archive member ``f`` is.
    """
    from h5py import h5d, h5l, h5o

    where = f"{member} " if member else ""

    def refuse(name: bytes, why: str) -> GateflowError:
        shown_name = clip(repr(name.decode("utf-8", "replace")), 80)
        return GateflowError(f"cannot read {show(path)}: {where}{shown_name} {why}; {_SAY}")

    names: list[bytes] = []

    def visit(name: bytes, info) -> tuple[bytes, str] | None:
        """Returns (name, why) to stop at a link that leaves the file (an exception raised
        inside h5py's callback would come out mangled)."""
        if info.type == h5l.TYPE_EXTERNAL:
            return name, f"is an external link to {_target(f.id.links.get_val(name))}"
        if info.type == h5l.TYPE_SOFT:
            return name, "is a soft link (Keras never writes one)"
        if info.type != h5l.TYPE_HARD:
            return name, f"is a link of user-defined class {info.type}"
        names.append(name)
        return (name, "") if len(names) > _MAX_LINKS else None

    stop = f.id.links.visit(visit, info=True)
    if stop is not None and stop[1]:
        raise refuse(*stop)
    if stop is not None:
        raise GateflowError(f"cannot read {show(path)}: {where}holds more than {_MAX_LINKS} "
                            "links; a Keras model holds far fewer")
    for name in names:
        if h5o.get_info(f.id, name).type != h5o.TYPE_DATASET:
            continue
        ds = h5d.open(f.id, name)
        try:
            _check_dataset(ds, name, size, refuse)
        finally:
            ds.close()


def _target(value) -> str:
    """An external link's (file, object), quoted for a message."""
    if isinstance(value, tuple) and len(value) == 2:
        file, obj = (as_text(v) for v in value)
        return f"{clip(repr(file), 80)} (object {clip(repr(obj), 40)})"
    return clip(repr(value), 80)


def _check_dataset(ds, name: bytes, size: int, refuse) -> None:
    """A dataset stored in place: no virtual layout, no external files, no plugin filter,
    every byte of its storage inside the file (checked from the creation properties and
    the chunk index; no data is read)."""
    from h5py import h5d

    dcpl = ds.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5d.VIRTUAL:
        sources = sorted({as_text(dcpl.get_virtual_filename(i))
                          for i in range(min(dcpl.get_virtual_count(), 8))})
        raise refuse(name, "is a virtual dataset that maps data from "
                     f"{clip(', '.join(map(repr, sources)), 80)}")
    if dcpl.get_external_count():
        file = as_text(dcpl.get_external(0)[0])
        raise refuse(name, f"keeps its data in another file, {clip(repr(file), 80)} "
                     "(HDF5 external storage)")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in _FILTERS:
            raise refuse(name, f"is compressed with HDF5 filter {code}, which would be "
                         "loaded as a plugin")
    if layout == h5d.CONTIGUOUS:
        offset = ds.get_offset()
        if offset is not None and offset + ds.get_storage_size() > size:
            raise refuse(name, f"claims {ds.get_storage_size()} bytes at offset {offset}, "
                         f"past the end of the file ({size} bytes)")
    elif layout == h5d.CHUNKED:
        def chunk(info) -> None:
            if info.byte_offset is None or info.byte_offset + info.size > size:
                raise refuse(name, f"claims a chunk of {info.size} bytes at offset "
                             f"{info.byte_offset}, past the end of the file ({size} bytes)")
        ds.chunk_iter(chunk)
    elif layout != h5d.COMPACT:
        raise refuse(name, f"has HDF5 storage layout {layout}, which gateflow does not read")


def stored_dtype(ds) -> str:
    """A dataset's dtype as Keras wrote it (``bfloat16`` is opaque 2-byte words marked so)."""
    dtype = ds.dtype
    if dtype.kind == "V" and dtype.itemsize == 2 and as_text(
            ds.attrs.get("dtype", "")) == "bfloat16":
        return "bfloat16"
    return str(dtype)


def read_array(ds, path: Path, what: str) -> np.ndarray:
    """A dataset as float64, its size checked before it is read (HDF5 can compress)."""
    if not hasattr(ds, "shape") or ds.shape is None:
        raise invalid(path, f"{what} is not an array")
    dtype, count = ds.dtype, int(np.prod(ds.shape, dtype=object))
    bf16 = stored_dtype(ds) == "bfloat16"
    if dtype.kind != "f" and not bf16:
        raise GateflowError(f"cannot read {show(path)}: {clip(what, 80)} has dtype {dtype}; "
                            "Keras weights must be floating point")
    fits(path, count * dtype.itemsize, count)
    raw = np.asarray(ds[()])
    if bf16:  # Keras stores bfloat16 as raw 2-byte words: the top half of a float32
        raw = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float64)


def read_side(datasets: Sequence, path: Path, where: str) -> Side:
    """kernel, recurrent kernel (and bias) from their datasets, in that order."""
    if len(datasets) not in (2, 3):
        raise invalid(path, f"{where} holds {len(datasets)} variables, not kernel, "
                      "recurrent_kernel and bias")
    arrays = [read_array(ds, path, f"{where} {role}") for ds, role in
              zip(datasets, ("kernel", "recurrent_kernel", "bias"))]
    return Side(arrays[0], arrays[1], arrays[2] if len(arrays) == 3 else None,
                frozenset(stored_dtype(ds) for ds in datasets))


def read_vars(group, path: Path, where: str) -> Side:
    """A Keras 3 ``vars`` group: datasets ``0``, ``1`` (and ``2``) in that order."""
    keys = sorted(group.keys(), key=lambda k: (len(k), k))
    if keys not in (["0", "1"], ["0", "1", "2"]):
        raise invalid(path, f"{where} holds variables {clip(repr(keys), 60)}, not 0, 1, 2")
    return read_side([group[k] for k in keys], path, where)


def cell_vars(group, path: Path, where: str) -> Side | None:
    """The variables of a layer group's ``cell/vars``, or None when it has none."""
    if "cell" not in group or "vars" not in group["cell"] or not len(group["cell"]["vars"]):
        return None
    return read_vars(group["cell"]["vars"], path, f"{where}/cell/vars")


# -- where the variables sit -------------------------------------------------------------
def vars_name(group) -> str | None:
    """The layer name recent Keras 3 versions write on a weights group's ``vars``."""
    if "vars" not in group:
        return None
    name = group["vars"].attrs.get("name")
    return None if name is None else as_text(name)


def container_of(group):
    """A model's layer container: ``layers`` (``_layer_checkpoint_dependencies`` in the
    files tf.keras 2.13 wrote in the .keras format)."""
    for key in ("layers", "_layer_checkpoint_dependencies"):
        if key in group:
            return group[key]
    return None


def weight_names(group) -> list[str]:
    return [as_text(n) for n in group.attrs.get("weight_names", [])]


def halves(names: list[str]) -> tuple[list[str], list[str]]:
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


def legacy_side(group, names: list[str], where: str, path: Path) -> Side:
    """kernel, recurrent_kernel and bias by the last part of their names (``:0`` dropped)."""
    by_role: dict[str, str] = {}
    for n in names:
        role = n.rsplit("/", 1)[-1].split(":")[0]
        if role not in ("kernel", "recurrent_kernel", "bias") or role in by_role:
            raise invalid(path, f"layer {where!r} holds variable {n!r}; expected kernel, "
                          "recurrent_kernel and bias (a Keras 1 file?)")
        by_role[role] = n
    if "kernel" not in by_role or "recurrent_kernel" not in by_role:
        raise invalid(path, f"layer {where!r} lacks its kernel or recurrent_kernel")
    return read_side([group[by_role[r]] for r in ("kernel", "recurrent_kernel", "bias")
                      if r in by_role], path, where)


def shapes_text(*sides: Side) -> str:
    return "; ".join(", ".join(str(a.shape) for a in (s.kernel, s.recurrent, s.bias)
                               if a is not None) for s in sides)


def family_of(side: Side) -> tuple[str, bool] | None:
    """(LSTM, GRU or SimpleRNN, cuDNN?) from the variable shapes alone; None when they fit
    none. A cuDNN layer's bias holds the input and the recurrent rows end to end: (8n,) for
    CuDNNLSTM, (6n,) for CuDNNGRU."""
    k, r, b = side.kernel, side.recurrent, side.bias
    if k.ndim != 2 or r.ndim != 2 or r.shape[0] == 0 or r.shape[1] % r.shape[0]:
        return None
    g = r.shape[1] // r.shape[0]
    family = {4: "LSTM", 3: "GRU", 1: "SimpleRNN"}.get(g)
    if family is None or k.shape[1] != r.shape[1]:
        return None
    biases = [(r.shape[1],)] + ([(2, r.shape[1])] if g == 3 else [])
    if b is None or b.shape in biases:
        return family, False
    if g in (3, 4) and b.shape == (2 * r.shape[1],):
        return family, True
    return None


# -- no config: the kind inferred from shapes ---------------------------------------------
INFERRED = "kind inferred from the variable shapes (the file has no config)"
_FORWARD = "direction forward: the file does not record go_backwards"


def keras3_inferred(group, prefix: str, path: Path, depth: int,
                    skipped: list[str]) -> Iterator[Layer]:
    """Every recurrent layer of a Keras 3 weights tree, from the shapes of its variables."""
    if depth > DEPTH:
        raise invalid(path, f"models are nested more than {DEPTH} deep")
    container = container_of(group)
    if container is None:
        return
    for key, sub in container.items():
        if not hasattr(sub, "keys"):
            continue
        name = f"{prefix}{vars_name(sub) or key}"
        if "forward_layer" in sub and "backward_layer" in sub:
            fwd = _inferred_vars(sub["forward_layer"], path, f"{name}/forward_layer", skipped)
            bwd = _inferred_vars(sub["backward_layer"], path, f"{name}/backward_layer",
                                 skipped)
            if fwd is not None and bwd is not None:
                layer = _bidirectional(name, fwd, bwd, skipped)
                if layer is not None:
                    yield layer
        elif "cell" in sub:
            side = _inferred_vars(sub, path, name, skipped)
            if side is not None:
                layer = _single(name, side, skipped)
                if layer is not None:
                    yield layer
        elif container_of(sub) is not None:
            yield from keras3_inferred(sub, f"{name}/", path, depth + 1, skipped)


def _inferred_vars(group, path: Path, where: str, skipped: list[str]) -> Side | None:
    """A weights-only layer's ``cell/vars``; a layer whose variables are not kernel,
    recurrent kernel and bias is skipped, and said so."""
    if "cell" not in group or "vars" not in group["cell"] or not len(group["cell"]["vars"]):
        return None
    keys = sorted(group["cell"]["vars"].keys(), key=lambda k: (len(k), k))
    if keys not in (["0", "1"], ["0", "1", "2"]):
        skipped.append(f"Keras layer {clip(repr(where), 60)}: a cell with variables "
                       f"{clip(repr(keys), 40)}, not kernel, recurrent kernel and bias")
        return None
    return read_vars(group["cell"]["vars"], path, f"{where}/cell/vars")


def _unfit(name: str, skipped: list[str], *sides: Side) -> None:
    skipped.append(f"Keras layer {clip(repr(name), 60)}: variables of shapes "
                   f"{clip(shapes_text(*sides), 80)} fit no LSTM, GRU or SimpleRNN")


def _single(name: str, side: Side, skipped: list[str]) -> Layer | None:
    found = family_of(side)
    if found is None:
        _unfit(name, skipped, side)
        return None
    family, cudnn = found
    kind = f"CuDNN{family} layer" if cudnn else f"{family} layer"
    return Layer(name, kind, family, None, {"forward": side}, INFERRED, cudnn=cudnn,
                 assumed=(_FORWARD,))


def _bidirectional(name: str, fwd: Side, bwd: Side, skipped: list[str]) -> Layer | None:
    found = family_of(fwd)
    if found is None or found != family_of(bwd):
        _unfit(name, skipped, fwd, bwd)
        return None
    family, cudnn = found
    inner = f"CuDNN{family}" if cudnn else family
    return Layer(name, f"Bidirectional({inner}) layer", family, None,
                 {"forward": fwd, "reverse": bwd}, INFERRED, cudnn=cudnn)


def legacy_weights(f, path: Path, skipped: list[str]) -> Iterator[Layer]:
    """A legacy weights-only .h5 (``save_weights``): one group per layer, kind from shapes."""
    for raw in f.attrs["layer_names"]:
        name = as_text(raw)
        if name not in f:
            continue
        names = weight_names(f[name])
        roles = [n.rsplit("/", 1)[-1].split(":")[0] for n in names]
        if "recurrent_kernel" not in roles:
            continue
        if roles.count("recurrent_kernel") == 2:
            fwd_names, bwd_names = halves(names)
            fwd = legacy_side(f[name], fwd_names, f"{name} (forward)", path)
            bwd = legacy_side(f[name], bwd_names, f"{name} (backward)", path)
            layer = _bidirectional(name, fwd, bwd, skipped)
        else:
            layer = _single(name, legacy_side(f[name], names, name, path), skipped)
        if layer is not None:
            yield layer
