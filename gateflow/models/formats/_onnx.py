"""ONNX: the ``.onnx`` reader, one :class:`Recurrent` per ``LSTM``, ``GRU`` or ``RNN`` node.

The file is parsed with the ``onnx`` package alone (``onnx.load_model_from_string``, which
never follows external data); nothing is executed and onnxruntime is not needed. Only the
top-level graph is searched, in node order: recurrent nodes inside subgraphs (``Loop``,
``If``, ``Scan`` bodies) and model-local functions are not listed. A node is named by its
``name``; a node without one is called ``f"{op_type}_{index}"``, and nodes that share a
name are told apart as ``f"{name}_{index}"``, where ``index`` is the node's position in the
graph's node list (counting every node, from 0).

A weight (``W``, ``R``, ``B``, ``P``) must be stored in the file: a graph initializer or a
``Constant`` node's ``value``. A weight fed at run time (a graph input without an
initializer, or any other node's output) and a tensor kept in an external data file are
refused, naming the node. An absent ``B`` is zeros.

The operators (https://onnx.ai/onnx/operators/) stack gates along the rows, per
direction: W is [num_directions, G·n, d], R is [num_directions, G·n, n], B is
[num_directions, 2·G·n] (W's biases, then R's), P is [num_directions, 3n]. Mapped onto
gateflow's names (a bias named for both W and R is their sum, as the operator adds them):

======  ===============  =================================================================
 node    ONNX gates       gateflow
======  ===============  =================================================================
 LSTM    i, o, f, c       W_i, W_o, W_f, W_g / U_* / b_* (ONNX's c is gateflow's g);
                          P (i, o, f) → p_i, p_o, p_f, cell ``lstm-peephole``; no P: ``lstm``
 GRU     z, r, h          W_z, W_r, W_n / U_z, U_r, U_n; b_z, b_r summed; b_in = Wb_h,
                          b_hn = Rb_h; ``linear_before_reset=1``: ``gru`` (reset after the
                          matmul), ``0`` (the default): ``gru-cho`` (reset before it)
 RNN     (one)            W, U, b; activation Tanh: ``rnn``, Relu: ``rnn-relu``
======  ===============  =================================================================

``direction="reverse"`` is a node whose one direction runs over the time-reversed
sequence (weights index 0); ``"bidirectional"`` holds the forward direction at index 0 and
the reverse one at index 1. Only the default activations are read (LSTM Sigmoid, Tanh,
Tanh; GRU Sigmoid, Tanh; RNN Tanh or Relu); other activations, ``activation_alpha``/``beta``,
``clip`` and ``input_forget=1`` change the cell's equations and are refused. ``layout=1``
(batch-first X and Y) leaves the weights as they are and is only noted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from gateflow._errors import GateflowError
from gateflow.cells._library import CELLS
from gateflow.cells._params import check_params
from gateflow.cells._record import Cell
from gateflow.models._checks import clip, one_line
from gateflow.models.formats._files import fits, show
from gateflow.models.formats._recurrent import Recurrent

if TYPE_CHECKING:
    from onnx import GraphProto, NodeProto, TensorProto

__all__ = ["EXTENSIONS", "WHAT", "scan", "sniff"]

WHAT = "an ONNX model"
EXTENSIONS = (".onnx",)


@dataclass(frozen=True)
class _Layout:
    """How one operator stacks its gates: gateflow's name of each row block of W (``ih``)
    and R (``hh``), and of each part of B's W half (``bias_w``) and R half (``bias_r``), in
    ONNX's gate order; ``activations`` are the defaults for one direction (lower case)."""

    ih: tuple[str, ...]
    hh: tuple[str, ...]
    bias_w: tuple[str, ...]
    bias_r: tuple[str, ...]
    activations: tuple[str, ...]
    extra: tuple[str, ...]  # the operator's own attributes besides the common ones

    @property
    def gates(self) -> int:
        return len(self.ih)


_LSTM_B = ("b_i", "b_o", "b_f", "b_g")
_GRU_B = ("b_z", "b_r")
_LAYOUTS = {
    "LSTM": _Layout(("W_i", "W_o", "W_f", "W_g"), ("U_i", "U_o", "U_f", "U_g"), _LSTM_B, _LSTM_B,
                    ("sigmoid", "tanh", "tanh"), ("input_forget",)),
    "GRU": _Layout(("W_z", "W_r", "W_n"), ("U_z", "U_r", "U_n"), (*_GRU_B, "b_in"),
                   (*_GRU_B, "b_hn"), ("sigmoid", "tanh"), ("linear_before_reset",)),
    "RNN": _Layout(("W",), ("U",), ("b",), ("b",), ("tanh",), ()),
}
_PEEPHOLES = ("p_i", "p_o", "p_f")  # P's order
_COMMON = ("activation_alpha", "activation_beta", "activations", "clip", "direction",
           "hidden_size", "layout", "output_sequence")  # output_sequence: opset 1 only
_DIRECTIONS = {"forward": ("forward",), "reverse": ("reverse",),
               "bidirectional": ("forward", "reverse")}
_WEIGHTS = {"W": 1, "R": 2, "B": 3, "P": 7}  # input slots; P is LSTM's only
_DOMAINS = ("", "ai.onnx")
# TensorProto data types read as weights: FLOAT, DOUBLE, FLOAT16, BFLOAT16
_FLOATS = {1: "float32", 11: "float64", 10: "float16", 16: "bfloat16"}
_EXTERNAL = 1  # TensorProto.EXTERNAL

# ModelProto's fields after ir_version (field number -> wire type), for sniff
_MODEL_FIELDS = {2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


# -- recognising ------------------------------------------------------------------------
def _varint(data: bytes, at: int) -> tuple[int, int] | None:
    """The protobuf varint at ``data[at:]`` and the offset after it, None if cut or too long."""
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    return None


def sniff(head: bytes, members: Sequence[str] | None) -> str | None:
    """A serialized ModelProto: field 1 (``ir_version``, tag byte 0x08) holding a small
    version, followed by the tag of another ModelProto field."""
    if members is not None or head[:1] != b"\x08":
        return None
    version = _varint(head, 1)
    if version is None or not 1 <= version[0] <= 64:  # IR versions are 1..14 as of onnx 1.23
        return None
    tag = _varint(head, version[1])
    if tag is None or _MODEL_FIELDS.get(tag[0] >> 3) != tag[0] & 7:
        return None
    return WHAT


# -- where a weight comes from --------------------------------------------------------------
@dataclass(frozen=True)
class _Sources:
    """What defines each value name in the top-level graph."""

    stored: dict[str, TensorProto]  # initializers and Constant nodes' values
    made: dict[str, tuple[str, str]]  # output of another node -> (its label, its op_type)
    inputs: frozenset[str]  # graph inputs
    sparse: frozenset[str]  # sparse initializers
    odd_constants: dict[str, str]  # Constant outputs without a tensor ``value``: attribute


def _sources(graph: GraphProto) -> _Sources:
    stored: dict[str, TensorProto] = {t.name: t for t in graph.initializer}
    made: dict[str, tuple[str, str]] = {}
    odd: dict[str, str] = {}
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.domain in _DOMAINS and len(node.output) == 1:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None and value.HasField("t"):
                stored[node.output[0]] = value.t
            else:
                odd[node.output[0]] = ", ".join(a.name for a in node.attribute) or "none"
            continue
        for out in node.output:
            if out:
                made[out] = (node.name or f"{node.op_type}_{i}", node.op_type)
    return _Sources(stored, made, frozenset(i.name for i in graph.input),
                    frozenset(s.values.name for s in graph.sparse_initializer), odd)


@dataclass(frozen=True)
class _Node:
    """A recurrent node being read: for messages and for its weights."""

    path: Path
    label: str
    op: str

    def refuse(self, what: str) -> GateflowError:
        return GateflowError(f"cannot read {show(self.path)}: {self.op} node "
                             f"{clip(repr(self.label), 80)} {what}")


def _tensor(src: _Sources, node: _Node, role: str, name: str) -> TensorProto:
    """The stored tensor that feeds input ``role`` of ``node``; refuse any other source."""
    shown_name = clip(repr(name), 60)
    stored_only = "gateflow reads only weights stored in the file (initializers or Constant nodes)"
    if name in src.made:
        label, op = src.made[name]
        raise node.refuse(f"takes its weight {role} ({shown_name}) from node "
                          f"{clip(repr(label), 60)} ({clip(op, 40)}), computed at run time; "
                          f"{stored_only}")
    if name in src.odd_constants:
        raise node.refuse(f"takes its weight {role} ({shown_name}) from a Constant node "
                          f"without a tensor value (attributes: "
                          f"{clip(src.odd_constants[name], 60)}); {stored_only}")
    if name in src.stored:
        return _check_tensor(src.stored[name], node, role)
    if name in src.sparse:
        raise node.refuse(f"takes its weight {role} ({shown_name}) from a sparse initializer, "
                          "which gateflow does not read; store it dense")
    if name in src.inputs:
        raise node.refuse(f"takes its weight {role} ({shown_name}) from a graph input, fed at "
                          f"run time; {stored_only}")
    raise node.refuse(f"takes its weight {role} from {shown_name}, which the top-level graph "
                      "does not define; re-export the model")


def _check_tensor(t: TensorProto, node: _Node, role: str) -> TensorProto:
    if t.data_location == _EXTERNAL:
        where = next((e.value for e in t.external_data if e.key == "location"), "?")
        raise node.refuse(f"keeps its weights in an external file ({clip(repr(where), 60)}, "
                          f"weight {role}); re-export with the weights inside, e.g. "
                          "onnx.save_model(model, path, save_as_external_data=False)")
    if t.data_type not in _FLOATS:
        raise node.refuse(f"has weight {role} of ONNX data type {t.data_type} "
                          f"({_type_name(t.data_type)}); weights must be float32/64/16 or "
                          "bfloat16")
    return t


def _type_name(code: int) -> str:
    from onnx import TensorProto

    try:
        return str(TensorProto.DataType.Name(code))
    except ValueError:
        return "unknown"


# -- attributes -----------------------------------------------------------------------------
def _attributes(node: NodeProto) -> dict[str, Any]:
    from onnx import helper

    out: dict[str, Any] = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list):
            value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        out[a.name] = value
    return out


def _activations(node: _Node, layout: _Layout, given, nd: int) -> str:
    """The activation of an RNN node ("tanh" or "relu"; the default for LSTM, GRU) after
    checking ``given`` is the default, once or once per direction."""
    k = len(layout.activations)
    if given is None:
        return layout.activations[0]
    if not isinstance(given, list):
        given = [given]
    acts = [str(a).lower() for a in given]
    listed = clip(", ".join(map(str, given)), 80)
    per = [acts[j:j + k] for j in range(0, len(acts), k)]
    if len(acts) not in (k, k * nd):
        raise node.refuse(f"has {len(acts)} activations ({listed}); "
                          f"expected {k} per direction")
    allowed = [list(layout.activations)] + ([["relu"]] if node.op == "RNN" else [])
    if any(p not in allowed for p in per) or any(p != per[0] for p in per):
        want = " or ".join("(" + ", ".join(a.title() for a in p) + ")" for p in allowed)
        raise node.refuse(f"has activations={listed}; gateflow reads only "
                          f"the default activations {want}, the same in every direction")
    return per[0][0]


def _check_attributes(node: _Node, layout: _Layout, attrs: dict[str, Any]) -> list[str]:
    """Refuse attributes that change the cell; the notes the others call for."""
    for name in attrs:
        if name not in _COMMON and name not in layout.extra:
            raise node.refuse(f"has attribute {clip(repr(name), 40)}, which the ONNX {node.op} "
                              "operator does not define; re-export the model")
    for name in ("activation_alpha", "activation_beta"):
        if name in attrs:
            raise node.refuse(f"has attribute {name}, which only parametrised activations "
                              "use; gateflow reads only the default activations")
    if "clip" in attrs:
        raise node.refuse(f"has clip={attrs['clip']!r}: the gate inputs are clipped, which "
                          "gateflow's cells do not model; re-export without clip")
    if attrs.get("input_forget", 0) != 0:
        raise node.refuse(f"has input_forget={attrs['input_forget']!r} (coupled input and "
                          "forget gates), which gateflow does not read; re-export with "
                          "input_forget=0")
    notes = []
    layout_attr = attrs.get("layout", 0)
    if layout_attr not in (0, 1):
        raise node.refuse(f"has layout={layout_attr!r}; the ONNX operator defines 0 and 1")
    if layout_attr == 1:
        notes.append("layout=1: X and Y are batch-first; the weights do not depend on it")
    return notes


# -- one node -------------------------------------------------------------------------------
def _shape_check(node: _Node, tensors: dict[str, TensorProto], layout: _Layout, nd: int,
                 hidden: int | None) -> tuple[int, int]:
    """(n, d) from R and W; refuse shapes that do not fit the operator or each other."""
    shapes = {role: tuple(int(x) for x in t.dims) for role, t in tensors.items()}
    g = layout.gates
    r = shapes["R"]
    if len(r) != 3 or r[0] != nd or r[2] < 1 or r[1] != g * r[2]:
        raise node.refuse(f"has R of shape {list(r)}; expected [num_directions={nd}, "
                          f"{g}*hidden, hidden]")
    n = r[2]
    w = shapes["W"]
    if len(w) != 3 or w[:2] != (nd, g * n) or w[2] < 1:
        raise node.refuse(f"has W of shape {list(w)}; expected [{nd}, {g * n}, input] for "
                          f"hidden {n}")
    want = {"B": (nd, 2 * g * n), "P": (nd, 3 * n)}
    for role in ("B", "P"):
        if role in shapes and shapes[role] != want[role]:
            raise node.refuse(f"has {role} of shape {list(shapes[role])}; expected "
                              f"{list(want[role])} for hidden {n}")
    if hidden is not None and hidden != n:
        raise node.refuse(f"has hidden_size={hidden!r} but R has shape {list(r)} (hidden {n}); "
                          "the node is inconsistent, re-export it")
    return n, w[2]


def _cell_of(op: str, attrs: dict[str, Any], activation: str, node: _Node,
             peepholes: bool) -> tuple[str, list[str]]:
    if op == "LSTM":
        if peepholes:
            return "lstm-peephole", ["peepholes P read as p_i, p_o, p_f"]
        return "lstm", []
    if op == "GRU":
        lbr = attrs.get("linear_before_reset", 0)
        if lbr == 1:
            return "gru", ["linear_before_reset=1: reset gate after the recurrent matmul "
                           "(PyTorch, cuDNN), cell gru"]
        if lbr == 0:
            return "gru-cho", ["linear_before_reset=0: reset gate before the recurrent matmul "
                               "(Cho et al. 2014), cell gru-cho"]
        raise node.refuse(f"has linear_before_reset={lbr!r}; the ONNX operator defines 0 and 1")
    return ("rnn-relu" if activation == "relu" else "rnn"), []


def _describe(path: Path, graph_node: NodeProto, label: str, src: _Sources) -> Recurrent:
    op = graph_node.op_type
    node = _Node(path, label, op)
    layout = _LAYOUTS[op]
    attrs = _attributes(graph_node)
    notes = _check_attributes(node, layout, attrs)
    direction = attrs.get("direction", "forward")
    if not isinstance(direction, str) or direction not in _DIRECTIONS:
        raise node.refuse(f"has direction={clip(repr(direction), 40)}; the ONNX operator "
                          "defines forward, reverse and bidirectional")
    directions = _DIRECTIONS[direction]
    if direction == "reverse":
        notes.append("direction=reverse: runs over the time-reversed sequence")
    activation = _activations(node, layout, attrs.get("activations"), len(directions))
    inputs = list(graph_node.input)
    tensors: dict[str, TensorProto] = {}
    for role, slot in _WEIGHTS.items():
        if role == "P" and op != "LSTM":
            continue
        name = inputs[slot] if slot < len(inputs) else ""
        if not name:
            if role in ("W", "R"):
                raise node.refuse(f"has no input {role}; re-export the model")
            continue
        tensors[role] = _tensor(src, node, role, name)
    n, d = _shape_check(node, tensors, layout, len(directions), attrs.get("hidden_size"))
    cell, cell_notes = _cell_of(op, attrs, activation, node, "P" in tensors)
    return Recurrent(
        module=label, framework="ONNX", kind=f"{op} node", cell=cell, cells=(cell,), layers=1,
        directions=directions, hidden=n, input=d,
        weights=_weights_of(node, layout, CELLS[cell], directions, tensors, n),
        note="; ".join([*cell_notes, *notes]),
    )


# -- weights --------------------------------------------------------------------------------
def _array(node: _Node, role: str, t: TensorProto) -> np.ndarray:
    from onnx import numpy_helper

    try:
        a = numpy_helper.to_array(t)
        out = np.asarray(a).astype(np.float64)
    except Exception as exc:  # a damaged tensor: data that does not fit its dims
        raise node.refuse(f"has a damaged weight {role} ({one_line(exc, 100)}); "
                          "re-export the model") from None
    if out.shape != tuple(t.dims):
        raise node.refuse(f"has a damaged weight {role} (data of shape {out.shape} for dims "
                          f"{list(t.dims)}); re-export the model")
    return out


def _map(layout: _Layout, arrays: dict[str, np.ndarray], k: int, n: int,
         peepholes: bool) -> dict[str, np.ndarray]:
    """Direction ``k``'s weights in gateflow names; a bias in both halves of B is the sum."""
    g = layout.gates

    def rows(a: np.ndarray, j: int) -> np.ndarray:
        return a[j * n:(j + 1) * n]

    out: dict[str, np.ndarray] = {}
    for role, names in (("W", layout.ih), ("R", layout.hh)):
        for j, name in enumerate(names):
            out[name] = rows(arrays[role][k], j)
    b = arrays["B"][k] if "B" in arrays else np.zeros(2 * g * n)
    for offset, names in ((0, layout.bias_w), (g, layout.bias_r)):
        for j, name in enumerate(names):
            part = rows(b, offset + j)
            out[name] = out[name] + part if name in out else part
    if peepholes:
        for j, name in enumerate(_PEEPHOLES):
            out[name] = rows(arrays["P"][k], j)
    return out


def _weights_of(node: _Node, layout: _Layout, cell: Cell, directions: tuple[str, ...],
                tensors: dict[str, TensorProto], n: int
                ) -> Callable[[str, int, str], dict[str, np.ndarray]]:
    def weights(want: str, layer: int, direction: str) -> dict[str, np.ndarray]:
        name = want.name if isinstance(want, Cell) else want
        if name != cell.name:
            raise GateflowError(f"ONNX {node.op} node {clip(repr(node.label), 80)} is cell "
                                f"{cell.name!r}; its weights cannot be read as "
                                f"{clip(repr(name), 40)}")
        if isinstance(layer, bool) or layer != 0:
            raise GateflowError(f"ONNX {node.op} node {clip(repr(node.label), 80)} has one "
                                f"layer; layer must be 0, got {clip(repr(layer), 40)}")
        if direction not in directions:
            raise GateflowError(f"ONNX {node.op} node {clip(repr(node.label), 80)} runs "
                                f"{' and '.join(directions)}; direction must be "
                                f"{' or '.join(map(repr, directions))}, got "
                                f"{clip(repr(direction), 40)}")
        count = sum(math.prod(t.dims) for t in tensors.values())
        fits(node.path, 8 * count, count)
        arrays = {role: _array(node, role, t) for role, t in tensors.items()}
        mapped = _map(layout, arrays, directions.index(direction), n, "P" in tensors)
        params = {p: np.ascontiguousarray(mapped[p], dtype=np.float64) for p in cell.params}
        try:
            check_params(cell, params)
        except GateflowError as exc:
            raise node.refuse(f"has unusable weights: {one_line(exc, 160)}") from None
        return params

    return weights


# -- the file -------------------------------------------------------------------------------
def _labels(nodes: list[tuple[int, NodeProto]]) -> list[str]:
    """Each node's name; ``op_type_index`` when it has none; ``name_index`` when shared."""
    base = [node.name or f"{node.op_type}_{i}" for i, node in nodes]
    counts = Counter(base)
    taken: set[str] = set()
    out = []
    for (i, _), name in zip(nodes, base):
        label = name if counts[name] == 1 else f"{name}_{i}"
        while label in taken or (label != name and label in counts):
            label = f"{label}_{i}"
        taken.add(label)
        out.append(label)
    return out


def scan(fh: BinaryIO, size: int, path: Path) -> tuple[Recurrent, ...]:
    """Every ``LSTM``, ``GRU`` and ``RNN`` node of the top-level graph, in graph order (an
    empty tuple when there is none). Weights are converted when asked for."""
    fits(path, size, size)
    try:
        import onnx
    except ImportError:
        raise GateflowError(f"reading {show(path)} needs the onnx package; install it with "
                            "pip install 'gateflow[onnx]'") from None
    fh.seek(0)
    data = fh.read()
    invalid = f"cannot read {show(path)}: not a valid ONNX model"
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # DecodeError for garbage and truncated files
        raise GateflowError(f"{invalid} ({one_line(exc, 120)}); re-export it with onnx.save "
                            "or torch.onnx.export") from None
    if not model.HasField("graph"):
        raise GateflowError(f"{invalid} (it holds no graph); re-export it with onnx.save or "
                            "torch.onnx.export")
    graph = model.graph
    nodes = [(i, node) for i, node in enumerate(graph.node)
             if node.op_type in _LAYOUTS and node.domain in _DOMAINS]
    if not nodes:
        return ()
    src = _sources(graph)
    return tuple(_describe(path, node, label, src)
                 for (_, node), label in zip(nodes, _labels(nodes)))
