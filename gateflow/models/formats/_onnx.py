"""ONNX: the ``.onnx`` reader, one :class:`Recurrent` per ``LSTM``, ``GRU``, ``RNN`` or
``com.microsoft`` ``DynamicQuantizeLSTM`` node, wherever it sits.

The file is parsed with the ``onnx`` package alone (``onnx.load_model_from_string``, which
never follows external data); nothing is executed and onnxruntime is not needed.
This module recognises the file and makes the records; its helpers find the nodes
(:mod:`._onnx_walk`), read each node's attributes and activations (:mod:`._onnx_node`), its
weights (:mod:`._onnx_weights`) and its initial states (:mod:`._onnx_initial`), and fold the
constants they come from (:mod:`._onnx_fold`, over :mod:`._onnx_scope` and
:mod:`._onnx_ops`).

**Where nodes are looked for.** The top-level graph, and every subgraph below it: the
branches of ``If`` (``then_branch``, ``else_branch``), the bodies of ``Loop`` and ``Scan``,
any other node's graph attributes, and the bodies of model-local functions a node calls,
down to :data:`MAX_NESTING` levels, in graph order (a subgraph's nodes right after the node
that holds it). ``Recurrent.where`` says where a node sits when it is not the top-level
graph (``If node '/If', then-branch``; nested levels joined by ``" > "``).

**Names** (what ``--module`` takes). A node is named by its ``name``; a node without one is
``f"{op_type}_{index}"``; nodes of one graph that share a name are ``f"{name}_{index}"``
(``index``: the node's position in its graph's node list, counting every node from 0). That
name is the module's when no other recurrent node in the file has it. When several do (the
two branches of an ``If`` hold the same ``/LSTM``), each of them is qualified by the path to
it: every enclosing node's name (made unique in its graph the same way) and the attribute
(or function) holding the next level, joined by ``:`` — ``/If:then_branch:/LSTM``,
``/Loop:body:/If:else_branch:/GRU``, ``call:MyFunction:lstm``. A top-level node keeps its
plain name.

**Weights** (``W``, ``R``, ``B``, ``P``) are constants of the file: an initializer or a
``Constant`` node of the node's graph or of a graph around it (a subgraph sees its outer
scopes' names), or a value computed from such constants by the operators that exporters put
in between (``Slice``, ``Concat``, ``Unsqueeze``, ``Squeeze``, ``Reshape``, ``Transpose``,
``Cast``, ``Gather``, ``Split``, ``Identity``, ``DequantizeLinear``, … see
:data:`._onnx_ops.OPS`), folded with NumPy (:mod:`._onnx_fold`). A weight that is not such
a constant (a graph input, a loop-carried value, another operator's output, an external or
sparse tensor) is not guessed: the node is skipped with one line in ``Found.skipped`` that
names the input and why. An absent ``B`` is zeros.

The operators (https://onnx.ai/onnx/operators/) stack gates along the rows, per direction:
W is [num_directions, G·n, d], R is [num_directions, G·n, n], B is [num_directions, 2·G·n]
(W's biases, then R's), P is [num_directions, 3n]. Mapped onto gateflow's names (a bias
named for both W and R is their sum, as the operator adds them):

======  ===============  =================================================================
 node    ONNX gates       gateflow
======  ===============  =================================================================
 LSTM    i, o, f, c       W_i, W_o, W_f, W_g / U_* / b_* (ONNX's c is gateflow's g);
                          P (i, o, f) → p_i, p_o, p_f, cell ``lstm-peephole``; no P: ``lstm``
 GRU     z, r, h          W_z, W_r, W_n / U_z, U_r, U_n; b_z, b_r summed; b_in = Wb_h,
                          b_hn = Rb_h; ``linear_before_reset=1``: ``gru`` (reset after the
                          matmul), ``0`` (the default): ``gru-cho`` (reset before it)
 RNN     (one)            W, U, b; cell ``rnn`` (``rnn-relu`` with Relu)
======  ===============  =================================================================

``DynamicQuantizeLSTM`` (onnxruntime's contrib operator, written by
``onnxruntime.quantization.quantize_dynamic``) is an LSTM whose W and R are 8-bit integers,
*transposed* ([num_directions, d, 4n] and [num_directions, n, 4n]), with a scale and a zero
point per direction ([num_directions]) or per output channel ([num_directions, 4n]). They
are dequantized exactly, in float64, as (q − zero_point)·scale, transposed back, and read as
an LSTM; the record's ``assumed`` says ``int8 weights dequantized: the analysis is of the
dequantized float model`` (at run time onnxruntime also quantizes x and h at each step).

**Activations** come from the node: ``activations`` (LSTM f, g, h → gateflow's roles gate,
candidate, output; GRU f, g → gate, candidate; RNN f → candidate), with the parameters in
``activation_alpha``/``activation_beta``, make a cell variant
(:func:`gateflow.cells._activations.variant_name`, e.g. ``lstm[gate=hard_sigmoid(0.2,0.5)]``).
The list names every direction's functions (3 or 6 for an LSTM, as the standard and
onnxruntime require). Parameters are consumed in the order of the activations that take them
(onnxruntime); where a list with one value per activation, read by position (as ONNX's
reference evaluator does), gives other functions, or a parameter with no agreed default
(Affine, ScaledTanh, ThresholdedRelu: the standard's operators and onnxruntime differ) is
missing, the node is skipped rather than guessed. HardSigmoid, LeakyRelu and Elu without
parameters take the standard defaults (0.2, 0.5; 0.01; 1), said in ``assumed``. A
bidirectional node must use the same functions in both directions (it is one cell here);
one that does not is skipped. ``clip`` (the gates' pre-activations clipped to ±clip)
changes the function and the node is skipped, unless it is infinite (it never binds);
``input_forget=1`` (coupled gates) is skipped too. A node that cannot be read is skipped
with its reason; the other nodes of the file are still read.

**Attributes** are checked against the types the operators define (``clip`` FLOAT,
``hidden_size`` INT, ``activations`` STRINGS, …) before their values are read: one of
another type (a TENSOR ``clip``, a GRAPH ``activations``, an INTS ``hidden_size``), or one
given twice, skips the node with one line that names the type, never the value; names from
the file are escaped and clipped in every line. The operators folded between a weight and
the node check theirs the same way (:mod:`._onnx_ops`).

``direction="reverse"`` is a node whose one direction runs over the time-reversed sequence
(weights index 0); ``"bidirectional"`` holds the forward direction at index 0 and the
reverse one at index 1. ``layout=1`` (batch-major X and Y) leaves the weights as they are;
``Recurrent.layout`` says ``"batch-major"`` for it, ``"time-major"`` otherwise. Weights
stored in float16, bfloat16 or an integer type are said once in ``assumed``.

**Initial states.** An ``initial_h``/``initial_c`` that is a constant of the file and
nonzero somewhere (a learned initial state: an initializer, a ``Constant``, a value folded
from them, or a constant broadcast to the batch's size at run time by ``Expand`` or
``ConstantOfShape``, through ``Identity``/``Cast``, as ``torch.onnx.export`` writes one) is
``Recurrent.initial``: each direction's state by gateflow block (``h``, and ``c`` for an
LSTM; a block the node leaves out is zeros), (n,) when it is the same for every sequence of
the batch (one of several equal sequences serves a run of any batch, and the note says so),
(batch, n) otherwise, which a run of another batch refuses; ``layout=1``'s [batch,
num_directions, hidden] is read as such. ``Recurrent.initial_from`` and the note say where
it comes from; ``decay`` and ``lyapunov`` start from it unless given ``--s0``. Zeros,
however made (the exporters' usual ``ConstantOfShape`` of the input's batch), are the
default and say nothing. An initial state that is not a constant (a graph input, a value
computed at run time) starts from zeros, and ``assumed`` says so. One of a non-float type, a
shape the operator does not take, or non-finite values skips the node; so does a weight or
initial state stored as a damaged tensor (data that does not hold as many values as its dims
say: checked by size when the file is scanned, nothing decoded), so that ``inspect`` never
shows sizes the data lacks.

**Skipped**: a recurrent node that cannot be read (with the reason), a subgraph deeper than
:data:`MAX_NESTING`, an operator of an unknown domain (it could hold a recurrence),
onnxruntime's other recurrent contrib operators, PyTorch ``ATen`` fallbacks of its RNNs, and
``Loop``/``Scan`` bodies that carry values from one step to the next through plain operators
(a recurrence that is not an LSTM/GRU/RNN node) each add one line to ``Found.skipped``; in a
model with no recurrent node at all, so does each graph input whose exact shape an output
repeats (a state carried from one call to the next, as in a cell written with Gemm and
Sigmoid).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from gateflow._errors import GateflowError, as_given
from gateflow.cells._activations import variant_name
from gateflow.cells._library import get_cell
from gateflow.models._checks import clip, one_line
from gateflow.models.formats._files import fits, show
from gateflow.models.formats._onnx_fold import Folder
from gateflow.models.formats._onnx_initial import initial_of, initial_states
from gateflow.models.formats._onnx_node import (
    DIRECTIONS,
    FLOATS,
    LAYOUTS,
    QLSTM,
    Skip,
    activations,
    attributes,
    base_cell,
    check_attributes,
    node_phrase,
    text,
    type_name,
)
from gateflow.models.formats._onnx_scope import Scope
from gateflow.models.formats._onnx_walk import MAX_NESTING, Candidate, Walk, module_names, opset
from gateflow.models.formats._onnx_weights import (
    QUANT,
    WEIGHTS,
    precision,
    shapes,
    weights_in,
    weights_of,
)
from gateflow.models.formats._recurrent import Found, Recurrent

__all__ = ["EXTENSIONS", "MAX_NESTING", "WHAT", "scan", "sniff"]

WHAT = "an ONNX model"
EXTENSIONS = (".onnx",)

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


# -- one node -------------------------------------------------------------------------------
def _describe(path: Path, folder: Folder, c: Candidate, module: str,
              defaults: frozenset[str] = frozenset()) -> Recurrent:
    node = c.node
    op = node.op_type
    quantized = op == "DynamicQuantizeLSTM"
    layout = QLSTM if quantized else LAYOUTS[op]
    attrs = attributes(node, c.scope)
    notes = check_attributes(op, layout, attrs)
    direction = attrs.get("direction", "forward")
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise Skip(f"has direction={clip(repr(direction), 40)}; the ONNX operator defines "
                   "forward, reverse and bidirectional")
    directions = DIRECTIONS[direction]
    if direction == "reverse":
        notes.append("direction=reverse: runs over the time-reversed sequence")
    roles, assumed = activations(layout, attrs, len(directions))
    slots = {r: s for r, s in WEIGHTS.items() if r != "P" or op in ("LSTM", "DynamicQuantizeLSTM")}
    if quantized:
        slots.update(QUANT)
    weights = weights_in(folder, node, c.scope, slots)
    for role in ("W", "R", "B", "P"):
        if role not in weights:
            continue
        dtype = weights[role].dtype
        ints = quantized and role in ("W", "R")
        if dtype not in (("int8", "uint8") if ints else FLOATS):
            must = "int8 or uint8" if ints else "float32/64/16 or bfloat16"
            raise Skip(f"has weight {role} of {type_name(dtype)}; weights must be {must}")
    if quantized:
        for m in ("W", "R"):
            if weights[f"{m}_zero_point"].dtype != weights[m].dtype:
                raise Skip(f"has {m} of type {weights[m].dtype} but {m}_zero_point of type "
                           f"{weights[f'{m}_zero_point'].dtype}")
            if weights[f"{m}_scale"].dtype not in FLOATS:
                raise Skip(f"has {m}_scale of {type_name(weights[f'{m}_scale'].dtype)}")
    n, d = shapes(op, weights, layout, len(directions), attrs.get("hidden_size"))
    peepholes = "P" in weights
    base, cell_notes = base_cell(op, attrs, peepholes)
    try:
        name = variant_name(base, **roles)
        cell = get_cell(name)
    except GateflowError as exc:
        raise Skip(f"has activations gateflow cannot build: {one_line(exc, 160)}") from None
    marks: set[str] = set()
    for role in ("W", "R", "B", "P"):
        if role in weights:
            marks |= weights[role].marks
    folded = sorted({o for f in weights.values() for o in f.ops})
    if folded:
        notes.append(f"weights folded from constants ({', '.join(folded)})")
    if quantized:
        per = {m: "channel" if len(weights[f"{m}_scale"].shape) == 2 else "direction"
               for m in ("W", "R")}
        how = f"per {per['W']}" if per["W"] == per["R"] else \
            f"W per {per['W']}, R per {per['R']}"
        notes.append(f"8-bit W and R dequantized as (q - zero_point)*scale, {how}")
    assumed += precision(marks)
    batch_major = attrs.get("layout", 0) == 1
    states, sources, unread = initial_states(folder, node, c.scope, directions, n, batch_major,
                                             defaults)
    assumed += unread
    lens = node.input[4] if len(node.input) > 4 else ""  # X, W, R, B, sequence_lens, ...
    if lens:
        assumed.append(f"sequence_lens ({text(repr(lens), 60)}) is not applied: every "
                       "sequence runs all T steps of the inputs (give sequences of one "
                       "length, or analyse each length apart)")
    initial_from = ""
    if states:
        initial_from = f"{node_phrase(op, module)}: {', '.join(sources)}"
        notes.append(f"initial state fixed by the file ({', '.join(sources)}): runs start "
                     f"from it unless {as_given('s0')} gives another")
    return Recurrent(
        module=module, framework="ONNX", kind=f"{op} node", cell=cell.name, cells=(cell.name,),
        layers=1, directions=directions, hidden=n, input=d,
        weights=weights_of(path, folder, op, module, cell, directions, weights, n),
        note="; ".join([*cell_notes, *notes]),
        layout="batch-major" if batch_major else "time-major",
        where=c.where, assumed=tuple(assumed),
        initial=initial_of(op, module, directions, states) if states else None,
        initial_from=initial_from)


# -- the file -------------------------------------------------------------------------------
def scan(fh: BinaryIO, size: int, path: Path) -> Found:
    """Every ``LSTM``, ``GRU``, ``RNN`` and ``DynamicQuantizeLSTM`` node of the model, in
    graph order, subgraphs and functions included, and one line for each thing skipped.
    Weights are converted when asked for (those computed from constants are folded here)."""
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
    scope = Scope.of(list(graph.node), initializers=graph.initializer,
                     sparse=graph.sparse_initializer,
                     inputs={v.name: "a graph input, fed at run time" for v in graph.input},
                     opset=opset(model.opset_import))
    walk = Walk(model)
    walk.graph(list(graph.node), scope, (), (), 0)
    folder = Folder(path)
    modules: list[Recurrent] = []
    skipped: list[str] = []
    defaults = frozenset(v.name for v in graph.input) & frozenset(
        t.name for t in graph.initializer)
    for c, module in zip(walk.found, module_names(walk.found)):
        try:
            modules.append(_describe(path, folder, c, module, defaults))
        except Skip as exc:
            where = f" ({c.where})" if c.where else ""
            skipped.append(f"{clip(c.node.op_type, 40)} node {clip(repr(module), 80)}{where} "
                           f"{exc}")
    states = walk.state_lines(graph) if not walk.found else []
    return Found(tuple(modules),
                 tuple([*skipped, *walk.skipped, *walk.unknown_lines(), *states]))
