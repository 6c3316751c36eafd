"""ONNX: the ``.onnx`` reader, one :class:`Recurrent` per ``LSTM``, ``GRU``, ``RNN`` or
``com.microsoft`` ``DynamicQuantizeLSTM`` node, wherever it sits.

The file is parsed with the ``onnx`` package alone (``onnx.load_model_from_string``, which
never follows external data); nothing is executed and onnxruntime is not needed.

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
:data:`._onnx_fold.OPS`), folded with NumPy (:mod:`._onnx_fold`). A weight that is not such
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
the node check theirs the same way (:mod:`._onnx_fold`).

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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from gateflow._errors import GateflowError, as_given
from gateflow.cells._activations import variant_name
from gateflow.cells._library import get_cell
from gateflow.cells._params import check_params
from gateflow.cells._record import Cell
from gateflow.models._checks import clip, one_line
from gateflow.models.formats._files import fits, show
from gateflow.models.formats._onnx_fold import (
    MAX_DEPTH,
    Damaged,
    Folded,
    Folder,
    Scope,
    Unfoldable,
)
from gateflow.models.formats._onnx_walk import MAX_NESTING, Candidate, Walk, module_names, opset
from gateflow.models.formats._recurrent import Found, Recurrent

if TYPE_CHECKING:
    from onnx import NodeProto

__all__ = ["EXTENSIONS", "MAX_NESTING", "WHAT", "scan", "sniff"]

WHAT = "an ONNX model"
EXTENSIONS = (".onnx",)


@dataclass(frozen=True)
class _Layout:
    """How one operator stacks its gates: gateflow's name of each row block of W (``ih``)
    and R (``hh``), and of each part of B's W half (``bias_w``) and R half (``bias_r``), in
    ONNX's gate order; ``roles`` are gateflow's roles of its activations, in ONNX's order,
    and ``defaults`` the operator's default activations (ONNX spelling)."""

    ih: tuple[str, ...]
    hh: tuple[str, ...]
    bias_w: tuple[str, ...]
    bias_r: tuple[str, ...]
    roles: tuple[str, ...]
    defaults: tuple[str, ...]
    extra: tuple[str, ...]  # the operator's own attributes besides the common ones

    @property
    def gates(self) -> int:
        return len(self.ih)


_LSTM_B = ("b_i", "b_o", "b_f", "b_g")
_GRU_B = ("b_z", "b_r")
_LSTM = _Layout(("W_i", "W_o", "W_f", "W_g"), ("U_i", "U_o", "U_f", "U_g"), _LSTM_B, _LSTM_B,
                ("gate", "candidate", "output"), ("Sigmoid", "Tanh", "Tanh"),
                ("input_forget", "layout"))
_LAYOUTS = {
    "LSTM": _LSTM,
    "GRU": _Layout(("W_z", "W_r", "W_n"), ("U_z", "U_r", "U_n"), (*_GRU_B, "b_in"),
                   (*_GRU_B, "b_hn"), ("gate", "candidate"), ("Sigmoid", "Tanh"),
                   ("linear_before_reset", "layout")),
    "RNN": _Layout(("W",), ("U",), ("b",), ("b",), ("candidate",), ("Tanh",), ("layout",)),
}
_QLSTM = _Layout(_LSTM.ih, _LSTM.hh, _LSTM.bias_w, _LSTM.bias_r, _LSTM.roles, _LSTM.defaults,
                 ("input_forget",))
_PEEPHOLES = ("p_i", "p_o", "p_f")  # P's order
_COMMON = ("activation_alpha", "activation_beta", "activations", "clip", "direction",
           "hidden_size", "output_sequence")  # output_sequence: opset 1 only
_DIRECTIONS = {"forward": ("forward",), "reverse": ("reverse",),
               "bidirectional": ("forward", "reverse")}
_WEIGHTS = {"W": 1, "R": 2, "B": 3, "P": 7}  # input slots; P is LSTM's only
_QUANT = {"W_scale": 8, "W_zero_point": 9, "R_scale": 10, "R_zero_point": 11}
_FLOATS = ("float32", "float64", "float16", "bfloat16")
_PRECISION = {"float16": "float16 weights (11 significant bits)",
              "bfloat16": "bfloat16 weights (8 significant bits)"}

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
class _Skip(Exception):
    """A node gateflow does not read; ``str(exc)`` completes "<op> node '<name>' ..."."""


# -- attributes -----------------------------------------------------------------------------
#: The type (``AttributeProto.AttributeType``'s name) each attribute the readers use has in the
#: operators' definitions; onnxruntime refuses a node whose attribute has another type.
_TYPES = {"activation_alpha": "FLOATS", "activation_beta": "FLOATS", "activations": "STRINGS",
          "clip": "FLOAT", "direction": "STRING", "hidden_size": "INT", "input_forget": "INT",
          "layout": "INT", "linear_before_reset": "INT", "output_sequence": "INT"}


def _text(value: str, limit: int) -> str:
    """A name from the file for a one-line message: unprintable characters escaped, clipped."""
    if not value.isprintable():
        value = value.encode("unicode_escape", "backslashreplace").decode("ascii")
    return clip(value, limit)


def _type_of(attr) -> str:
    from onnx import AttributeProto

    try:
        return AttributeProto.AttributeType.Name(attr.type)
    except ValueError:  # a type code the protocol does not define
        return f"code {int(attr.type)}"


def _attributes(node: NodeProto, scope: Scope) -> dict[str, Any]:
    """The node's attributes by name, each of the type the operator gives it (checked before
    its value is read: a TENSOR ``clip`` or a GRAPH ``activations`` is skipped with one line,
    never printed); an attribute the operators do not define is listed with value None (the
    caller skips the node for it)."""
    from onnx import helper

    out: dict[str, Any] = {}
    for name, a in scope.attributes_of(node):
        if name in out:
            raise _Skip(f"has attribute {_text(repr(name), 40)} twice; re-export the model")
        want = _TYPES.get(name)
        if want is None:
            out[name] = None  # not read: _check_attributes names it
            continue
        got = _type_of(a)
        if got != want:
            raise _Skip(f"has attribute {name} of type {got}; the operators define it as "
                        f"{want}; re-export the model")
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list):
            value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        out[name] = value
    return out


#: ONNX activation (lower case) -> (gateflow's name, parameters it takes, their standard
#: defaults or None where the standard and onnxruntime disagree on a missing value).
_ACTIVATIONS: dict[str, tuple[str, int, tuple[float, ...] | None]] = {
    "sigmoid": ("sigmoid", 0, ()), "tanh": ("tanh", 0, ()), "relu": ("relu", 0, ()),
    "softsign": ("softsign", 0, ()), "softplus": ("softplus", 0, ()),
    "hardsigmoid": ("hard_sigmoid", 2, (0.2, 0.5)), "leakyrelu": ("leaky_relu", 1, (0.01,)),
    "elu": ("elu", 1, (1.0,)), "thresholdedrelu": ("thresholded_relu", 1, None),
    "affine": ("affine", 2, None), "scaledtanh": ("scaled_tanh", 2, None),
}


def _float32(v: float) -> str:
    return str(np.float32(v))


def _read_params(names: list[str], alphas: list[float], betas: list[float], *,
                 by_position: bool) -> list[tuple[str, tuple[float | None, ...]]]:
    """Each activation's (gateflow name, parameters; None where not given): alpha and beta
    taken in order by the activations that use them, or (``by_position``, for a list with
    one value per activation) the value at the activation's own position."""
    out = []
    ia = ib = 0
    alpha_at = by_position and len(alphas) == len(names)
    beta_at = by_position and len(betas) == len(names)
    for k, raw in enumerate(names):
        name, count, _ = _ACTIVATIONS[raw.lower()]
        params: list[float | None] = []
        if count >= 1:
            j = k if alpha_at else ia
            params.append(alphas[j] if j < len(alphas) else None)
            ia += 1
        if count >= 2:
            j = k if beta_at else ib
            params.append(betas[j] if j < len(betas) else None)
            ib += 1
        out.append((name, tuple(params)))
    return out


def _resolve(names: list[str], specs: list[tuple[str, tuple[float | None, ...]]]
             ) -> list[tuple[str, tuple[float | None, ...], bool]]:
    """Each activation with the standard defaults filled in where it has them (and whether
    one was), None left where it has none."""
    out = []
    for raw, (name, params) in zip(names, specs):
        defaults = _ACTIVATIONS[raw.lower()][2]
        filled = tuple(d if p is None else p for p, d in zip(params, defaults)) \
            if defaults is not None else params
        out.append((name, filled, any(p is None for p in params) and defaults is not None))
    return out


def _activations(layout: _Layout, attrs: dict[str, Any], nd: int
                 ) -> tuple[dict[str, tuple], list[str]]:
    """The node's activations as role -> (gateflow name, *parameters), the same for every
    direction, and the lines of what was assumed; _Skip where they cannot be read."""
    k = len(layout.roles)
    given = attrs.get("activations")
    names = [str(a) for a in (given if isinstance(given, list) else [given])] \
        if given is not None else list(layout.defaults)
    listed = _text(", ".join(names[:k * nd + 1]), 80)
    if given is not None and len(names) != k * nd:
        raise _Skip(f"has {len(names)} activations ({listed}); the operator expects {k} per "
                    f"direction, {k * nd} in all")
    names = names * (nd if given is None else 1)
    unknown = [a for a in names if a.lower() not in _ACTIVATIONS]
    if unknown:
        raise _Skip(f"has activation {_text(repr(unknown[0]), 40)}, which the ONNX operators "
                    "do not define")
    alphas = [float(a) for a in attrs.get("activation_alpha", [])]
    betas = [float(b) for b in attrs.get("activation_beta", [])]
    readings = [_resolve(names, _read_params(names, alphas, betas, by_position=False)),
                _resolve(names, _read_params(names, alphas, betas, by_position=True))]
    if readings[0] != readings[1]:
        raise _Skip(f"has activations={listed} with activation_alpha="
                    f"{clip(str(alphas), 80)} and activation_beta={clip(str(betas), 80)}, "
                    "which the standard lets be read two ways "
                    "(a value for each activation that takes one, as onnxruntime does, or "
                    "one value per activation, by position, as ONNX's reference does) giving "
                    "different functions; gateflow does not guess")
    assumed = []
    resolved = []
    for raw, (name, params, defaulted) in zip(names, readings[0]):
        if any(p is None for p in params):
            raise _Skip(f"has activation {raw} without its parameters "
                        "(activation_alpha/activation_beta), for which the ONNX standard and "
                        "onnxruntime give different defaults; give them explicitly")
        if defaulted:
            line = (f"activation {raw} without activation_alpha/activation_beta: the ONNX "
                    f"defaults ({', '.join(_float32(p) for p in params if p is not None)})")
            if line not in assumed:
                assumed.append(line)
        resolved.append((name, *(np.float32(p) for p in params)))
    per = [tuple(resolved[j:j + k]) for j in range(0, len(resolved), k)]
    if any(p != per[0] for p in per):
        raise _Skip(f"has activations={listed}, different in its two directions; gateflow "
                    "reads a bidirectional node as one cell")
    return dict(zip(layout.roles, per[0])), assumed


def _check_attributes(op: str, layout: _Layout, attrs: dict[str, Any]) -> list[str]:
    """Refuse attributes that change the cell; the notes the others call for."""
    for name in attrs:
        if name not in _COMMON and name not in layout.extra:
            raise _Skip(f"has attribute {_text(repr(name), 40)}, which the {op} operator does "
                        "not define; re-export the model")
    if "clip" in attrs:
        value = float(attrs["clip"])
        if not (math.isinf(value) or value >= float(np.finfo(np.float32).max)):
            raise _Skip(f"has clip={value:g}: its gates' and cell's pre-activations are "
                        f"clipped to [-{value:g}, {value:g}], which changes the cell's function "
                        "wherever they reach it; gateflow reads cells without clipping, "
                        "re-export without clip")
    if attrs.get("input_forget", 0) != 0:
        raise _Skip(f"has input_forget={attrs['input_forget']!r} (coupled input and forget "
                    "gates), which gateflow does not read; re-export with input_forget=0")
    notes = []
    layout_attr = attrs.get("layout", 0)
    if layout_attr not in (0, 1):
        raise _Skip(f"has layout={layout_attr!r}; the ONNX operator defines 0 and 1")
    if layout_attr == 1:
        notes.append("layout=1: X and Y are batch-major (batch, time, features)")
    return notes


def _shapes(op: str, weights: dict[str, Folded], layout: _Layout, nd: int,
            hidden: int | None) -> tuple[int, int]:
    """(n, d) from R and W (a quantized node's W and R are transposed); _Skip for shapes that
    do not fit the operator or each other."""
    g = layout.gates
    quantized = op == "DynamicQuantizeLSTM"
    r = weights["R"].shape
    w = weights["W"].shape
    if quantized:
        if len(r) != 3 or r[0] != nd or r[1] < 1 or r[2] != g * r[1]:
            raise _Skip(f"has R of shape {list(r)}; expected [num_directions={nd}, hidden, "
                        f"{g}*hidden]")
        n = r[1]
        if len(w) != 3 or w[0] != nd or w[2] != g * n or w[1] < 1:
            raise _Skip(f"has W of shape {list(w)}; expected [{nd}, input, {g * n}] for "
                        f"hidden {n}")
        d = w[1]
    else:
        if len(r) != 3 or r[0] != nd or r[2] < 1 or r[1] != g * r[2]:
            raise _Skip(f"has R of shape {list(r)}; expected [num_directions={nd}, "
                        f"{g}*hidden, hidden]")
        n = r[2]
        if len(w) != 3 or w[:2] != (nd, g * n) or w[2] < 1:
            raise _Skip(f"has W of shape {list(w)}; expected [{nd}, {g * n}, input] for "
                        f"hidden {n}")
        d = w[2]
    want = {"B": (nd, 2 * g * n), "P": (nd, 3 * n)}
    for role in ("B", "P"):
        if role in weights and weights[role].shape != want[role]:
            raise _Skip(f"has {role} of shape {list(weights[role].shape)}; expected "
                        f"{list(want[role])} for hidden {n}")
    if quantized:
        for m in ("W", "R"):
            s, z = weights[f"{m}_scale"], weights[f"{m}_zero_point"]
            if s.shape not in ((nd,), (nd, g * n)) or z.shape != s.shape:
                raise _Skip(f"has {m}_scale of shape {list(s.shape)} and {m}_zero_point of "
                            f"shape {list(z.shape)}; expected both [{nd}] (per direction) or "
                            f"[{nd}, {g * n}] (per channel)")
    if hidden is not None and hidden != n:
        raise _Skip(f"has hidden_size={hidden!r} but R has shape {list(r)} (hidden {n}); the "
                    "node is inconsistent, re-export it")
    return n, d


def _type_name(dtype: str) -> str:
    from onnx import TensorProto, helper

    try:
        code = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        return f"ONNX data type {code} ({TensorProto.DataType.Name(code)})"
    except Exception:  # a type NumPy or ONNX cannot name
        return dtype


def _weights_in(folder: Folder, node: NodeProto, scope: Scope,
                roles: dict[str, int]) -> dict[str, Folded]:
    inputs = list(node.input)
    out: dict[str, Folded] = {}
    for role, slot in roles.items():
        name = inputs[slot] if slot < len(inputs) else ""
        if not name:
            if role in ("W", "R") or role in _QUANT:
                raise _Skip(f"has no input {role}; re-export the model")
            continue
        try:
            out[role] = folder.value(scope, name)
        except Damaged as exc:
            raise _Skip(f"has a damaged weight {role}: {exc}; re-export the model") from None
        except Unfoldable as exc:
            raise _Skip(f"takes its weight {role} from {clip(repr(name), 60)}, which is not "
                        f"a constant gateflow can fold: {exc}") from None
    return out


def _describe(path: Path, folder: Folder, c: Candidate, module: str,
              defaults: frozenset[str] = frozenset()) -> Recurrent:
    node = c.node
    op = node.op_type
    quantized = op == "DynamicQuantizeLSTM"
    layout = _QLSTM if quantized else _LAYOUTS[op]
    attrs = _attributes(node, c.scope)
    notes = _check_attributes(op, layout, attrs)
    direction = attrs.get("direction", "forward")
    if not isinstance(direction, str) or direction not in _DIRECTIONS:
        raise _Skip(f"has direction={clip(repr(direction), 40)}; the ONNX operator defines "
                    "forward, reverse and bidirectional")
    directions = _DIRECTIONS[direction]
    if direction == "reverse":
        notes.append("direction=reverse: runs over the time-reversed sequence")
    roles, assumed = _activations(layout, attrs, len(directions))
    slots = {r: s for r, s in _WEIGHTS.items() if r != "P" or op in ("LSTM", "DynamicQuantizeLSTM")}
    if quantized:
        slots.update(_QUANT)
    weights = _weights_in(folder, node, c.scope, slots)
    for role in ("W", "R", "B", "P"):
        if role not in weights:
            continue
        dtype = weights[role].dtype
        ints = quantized and role in ("W", "R")
        if dtype not in (("int8", "uint8") if ints else _FLOATS):
            must = "int8 or uint8" if ints else "float32/64/16 or bfloat16"
            raise _Skip(f"has weight {role} of {_type_name(dtype)}; weights must be {must}")
    if quantized:
        for m in ("W", "R"):
            if weights[f"{m}_zero_point"].dtype != weights[m].dtype:
                raise _Skip(f"has {m} of type {weights[m].dtype} but {m}_zero_point of type "
                            f"{weights[f'{m}_zero_point'].dtype}")
            if weights[f"{m}_scale"].dtype not in _FLOATS:
                raise _Skip(f"has {m}_scale of {_type_name(weights[f'{m}_scale'].dtype)}")
    n, d = _shapes(op, weights, layout, len(directions), attrs.get("hidden_size"))
    peepholes = "P" in weights
    base, cell_notes = _base_cell(op, attrs, peepholes)
    try:
        name = variant_name(base, **roles)
        cell = get_cell(name)
    except GateflowError as exc:
        raise _Skip(f"has activations gateflow cannot build: {one_line(exc, 160)}") from None
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
    assumed += _precision(marks)
    batch_major = attrs.get("layout", 0) == 1
    states, sources, unread = _initial_states(folder, node, c.scope, directions, n, batch_major,
                                              defaults)
    assumed += unread
    lens = node.input[4] if len(node.input) > 4 else ""  # X, W, R, B, sequence_lens, ...
    if lens:
        assumed.append(f"sequence_lens ({_text(repr(lens), 60)}) is not applied: every "
                       "sequence runs all T steps of the inputs (give sequences of one "
                       "length, or analyse each length apart)")
    initial_from = ""
    if states:
        initial_from = f"{_node(op, module)}: {', '.join(sources)}"
        notes.append(f"initial state fixed by the file ({', '.join(sources)}): runs start "
                     f"from it unless {as_given('s0')} gives another")
    return Recurrent(
        module=module, framework="ONNX", kind=f"{op} node", cell=cell.name, cells=(cell.name,),
        layers=1, directions=directions, hidden=n, input=d,
        weights=_weights_of(path, folder, op, module, cell, directions, weights, n),
        note="; ".join([*cell_notes, *notes]),
        layout="batch-major" if batch_major else "time-major",
        where=c.where, assumed=tuple(assumed),
        initial=_initial_of(op, module, directions, states) if states else None,
        initial_from=initial_from)


# -- initial states -------------------------------------------------------------------------
_STATES = (("initial_h", 5, "h"), ("initial_c", 6, "c"))  # ONNX input, its slot, gateflow's block


def _producer(scope: Scope, name: str) -> tuple[NodeProto, Scope, str] | None:
    """The node (of ``scope`` or a scope around it) whose output ``name`` is, its scope and
    its label; None for a stored tensor, a Constant, an input or an unknown name."""
    s: Scope | None = scope
    for _ in range(MAX_DEPTH + MAX_NESTING):
        if s is None:
            return None
        if name in s.producers:
            return s.producers[name][0], s, s.producers[name][1]
        if name in s.stored or name in s.constants or name in s.inputs or name in s.sparse:
            return None
        if name in s.bindings:
            s, name = s.bindings[name]
            if not name:
                return None
            continue
        s = s.parent
    return None


def _broadcast(folder: Folder, scope: Scope, name: str, why: Unfoldable, depth: int = 0
               ) -> np.ndarray:
    """An array that ``name`` is at run time broadcast to a shape known at run time only:
    exporters make an initial state of the batch's size with ``ConstantOfShape`` (zeros, or a
    fill value) or ``Expand`` of a constant (a learned state), through ``Identity`` and
    ``Cast``. Anything else raises ``why``, the reason it is not a constant."""
    from onnx import AttributeProto, helper, numpy_helper

    found = _producer(scope, name) if depth <= MAX_DEPTH else None
    if found is None or found[0].domain not in ("", "ai.onnx"):
        raise why
    node, where, _ = found
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "ConstantOfShape":
        value = attrs.get("value")
        if value is None:
            return np.zeros((), np.float32)  # the operator's default: float32 zeros
        if value.type != AttributeProto.TENSOR:
            raise Unfoldable(f"{clip(repr(name), 60)} is made by ConstantOfShape with a value "
                             f"of type {_type_of(value)}, not a TENSOR")
        try:
            fill = np.asarray(numpy_helper.to_array(value.t))
        except Exception as exc:  # a damaged tensor
            raise Unfoldable(f"{clip(repr(name), 60)} is made by ConstantOfShape with a damaged "
                             f"value ({one_line(exc, 80)})") from None
        if fill.size != 1:
            raise Unfoldable(f"{clip(repr(name), 60)} is made by ConstantOfShape with a value of "
                             f"{fill.size} elements, not one")
        return fill.reshape(())
    if node.op_type not in ("Identity", "Expand", "Cast") or not node.input or not node.input[0]:
        raise why
    inner = node.input[0]
    try:
        f = folder.value(where, inner)
    except Unfoldable as exc:
        a = _broadcast(folder, where, inner, exc, depth + 1)
    else:
        a = folder.load(f, clip(repr(inner), 60))
    if node.op_type == "Cast":
        to = attrs.get("to")
        if to is None or to.type != AttributeProto.INT:
            raise Unfoldable(f"{clip(repr(name), 60)} is made by a Cast without an INT 'to'")
        try:
            a = a.astype(helper.tensor_dtype_to_np_dtype(int(to.i)))
        except Exception as exc:  # an unknown type code
            raise Unfoldable(f"{clip(repr(name), 60)} is made by a Cast to an unknown type "
                             f"({one_line(exc, 60)})") from None
    return a


def _initial_states(folder: Folder, node: NodeProto, scope: Scope, directions: tuple[str, ...],
                    n: int, batch_major: bool, defaults: frozenset[str] = frozenset()
                    ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """The node's initial states that the file fixes to constants, nonzero somewhere:
    gateflow's block -> (num_directions, batch, n) float64 (batch 1 when the constant is
    broadcast over the batch); where each comes from, in words; and a line for each initial
    state that is not a constant of the file (a graph input, a value computed at run time),
    which a run takes as zeros. _Skip for one of the wrong type, shape or values.
    ``defaults``: the top-level graph's inputs that are also initializers (a value a feed
    may replace at run time), said as such."""
    nd = len(directions)
    shape = f"[batch, num_directions={nd}, hidden={n}]" if batch_major else \
        f"[num_directions={nd}, batch, hidden={n}]"
    states: dict[str, np.ndarray] = {}
    sources: list[str] = []
    unread: list[str] = []
    lstm = node.op_type in ("LSTM", "DynamicQuantizeLSTM")
    for state, slot, block in _STATES:
        name = node.input[slot] if slot < len(node.input) else ""
        if not name or (block == "c" and not lstm):
            continue
        shown = clip(repr(name), 60)
        exact = True
        try:
            f = folder.value(scope, name)
        except Damaged as exc:
            raise _Skip(f"has a damaged {state}: {exc}; re-export the model") from None
        except Unfoldable as exc:
            try:
                array = _broadcast(folder, scope, name, exc)
            except Damaged as why:  # a stored tensor it is broadcast from
                raise _Skip(f"has a damaged {state}: {shown} is made from {why}; re-export "
                            "the model") from None
            except Unfoldable as why:
                made = _producer(scope, name)
                reason = one_line(why, 160) if made is None else \
                    f"the output of {_text(made[0].op_type, 40)} node {_text(repr(made[2]), 80)}"
                unread.append(f"{state} is not a constant of the file ({reason}): the "
                              f"analysis starts from zeros unless {as_given('s0')} gives the "
                              "initial state")
                continue
            exact = False
        else:
            if f.dtype not in _FLOATS:
                raise _Skip(f"has {state} {shown} of {_type_name(f.dtype)}; it must be of X's "
                            "float type")
            try:
                array = folder.load(f, f"{state} {shown}")
            except Unfoldable as exc:
                raise _Skip(f"has {exc}; re-export the model") from None
        if str(array.dtype) not in _FLOATS:
            raise _Skip(f"has {state} {shown} of type {array.dtype}; it must be of X's float "
                        "type")
        wrong = _Skip(f"has {state} {shown} of shape {list(array.shape)}; the operator expects "
                      f"{shape}" + ("" if exact else " (after broadcasting)"))
        if array.ndim > 3 or (exact and array.ndim != 3):
            raise wrong
        dims = (1,) * (3 - array.ndim) + tuple(int(x) for x in array.shape)
        a3 = array.reshape(dims)
        batch = dims[0] if batch_major else dims[1]
        target = (batch, nd, n) if batch_major else (nd, batch, n)
        if batch < 1 or (exact and dims != target):
            raise wrong
        try:
            if np.broadcast_shapes(dims, target) != target:
                raise wrong
        except ValueError:
            raise wrong from None
        full = np.broadcast_to(a3, target).astype(np.float64)
        if batch_major:
            full = np.swapaxes(full, 0, 1)
        if not np.all(np.isfinite(full)):
            raise _Skip(f"has {state} {shown} with values that are not finite")
        if np.any(full != 0):
            states[block] = np.ascontiguousarray(full)
            # a state of several sequences, all equal, is one state: any batch starts from it
            same = f" (the same for its {batch} sequences: used for any batch)" \
                if batch > 1 and np.all(full == full[:, :1]) else ""
            sources.append(f"{state} {shown}" + ("" if exact else " broadcast over the batch")
                           + same + (" (a graph input's default)" if name in defaults else ""))
    if states:  # a block the file leaves zero is its zeros, said with the other
        for state, _, block in _STATES:
            if block not in states and (block == "h" or lstm):
                states[block] = np.zeros((nd, 1, n))
    return states, sources, unread


def _node(op: str, module: str) -> str:
    """``ONNX LSTM node 'name'``, for messages."""
    return f"ONNX {op} node {_text(repr(module), 80)}"


def _check_place(label: str, directions: tuple[str, ...], layer: int, direction: str) -> None:
    """Refuse a layer other than 0 (a node is one layer) or a direction the node does not
    run, naming the node (``label``)."""
    if isinstance(layer, bool) or layer != 0:
        raise GateflowError(f"{label} has one layer; layer must be 0, got "
                            f"{clip(repr(layer), 40)}")
    if direction not in directions:
        raise GateflowError(f"{label} runs {' and '.join(directions)}; direction must be "
                            f"{' or '.join(map(repr, directions))}, got "
                            f"{clip(repr(direction), 40)}")


def _initial_of(op: str, module: str, directions: tuple[str, ...],
                states: dict[str, np.ndarray]) -> Callable[[str, int, str], dict[str, np.ndarray]]:
    """``Recurrent.initial``: each direction's initial state by block, (n,) when it is the
    same for every sequence of the batch, (batch, n) otherwise."""
    label = _node(op, module)
    per: dict[str, dict[str, np.ndarray]] = {}
    for k, direction in enumerate(directions):
        out = {}
        for block, full in states.items():
            v = full[k]
            out[block] = v[0].copy() if np.all(v == v[0]) else v.copy()
        per[direction] = out if any(np.any(v != 0) for v in out.values()) else {}

    def initial_for(want: str, layer: int, direction: str) -> dict[str, np.ndarray]:
        _check_place(label, directions, layer, direction)
        return {b: v.copy() for b, v in per[direction].items()}

    return initial_for


def _precision(marks: set[str]) -> list[str]:
    out = []
    for mark in sorted(marks):
        if mark in _PRECISION:
            out.append(f"{_PRECISION[mark]}: the analysis is of these values, in float64")
        elif mark.startswith("float"):
            out.append(f"{mark} weights: the analysis is of these values, in float64")
        else:
            out.append(f"{mark} weights dequantized: the analysis is of the dequantized float "
                       "model")
    return out


def _base_cell(op: str, attrs: dict[str, Any], peepholes: bool) -> tuple[str, list[str]]:
    if op in ("LSTM", "DynamicQuantizeLSTM"):
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
        raise _Skip(f"has linear_before_reset={lbr!r}; the ONNX operator defines 0 and 1")
    return "rnn", []


# -- weights --------------------------------------------------------------------------------
def _dequantized(q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """(q − zero_point)·scale in float64, transposed to [num_directions, G·n, columns]:
    ``q`` is [num_directions, columns, G·n], ``scale`` and ``zero`` [num_directions] or
    [num_directions, G·n]."""
    s = scale.astype(np.float64)
    z = zero.astype(np.float64)
    if s.ndim == 1:
        s, z = s[:, None, None], z[:, None, None]
    else:
        s, z = s[:, None, :], z[:, None, :]
    return np.transpose((q.astype(np.float64) - z) * s, (0, 2, 1))


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


def _weights_of(path: Path, folder: Folder, op: str, module: str, cell: Cell,
                directions: tuple[str, ...], weights: dict[str, Folded], n: int
                ) -> Callable[[str, int, str], dict[str, np.ndarray]]:
    label = _node(op, module)
    layout = _QLSTM if op == "DynamicQuantizeLSTM" else _LAYOUTS[op]

    def weights_for(want: str, layer: int, direction: str) -> dict[str, np.ndarray]:
        name = want.name if isinstance(want, Cell) else want
        if name != cell.name:
            raise GateflowError(f"{label} is cell {cell.name!r}; its weights cannot be read "
                                f"as {clip(repr(name), 40)}")
        _check_place(label, directions, layer, direction)
        count = sum(f.size for f in weights.values())
        fits(path, 8 * count, count)
        try:
            raw = {role: folder.load(f, f"weight {role}") for role, f in weights.items()}
        except Unfoldable as exc:
            raise GateflowError(f"cannot read {show(path)}: {label} has a damaged weight: "
                                f"{exc}; re-export the model") from None
        arrays = {role: a.astype(np.float64) for role, a in raw.items()
                  if role in ("B", "P") or op != "DynamicQuantizeLSTM"}
        if op == "DynamicQuantizeLSTM":
            for m in ("W", "R"):
                arrays[m] = _dequantized(raw[m], raw[f"{m}_scale"], raw[f"{m}_zero_point"])
        mapped = _map(layout, arrays, directions.index(direction), n, "P" in weights)
        params = {p: np.ascontiguousarray(mapped[p], dtype=np.float64) for p in cell.params}
        try:
            check_params(cell, params)
        except GateflowError as exc:
            raise GateflowError(f"cannot read {show(path)}: {label} has unusable weights: "
                                f"{one_line(exc, 160)}") from None
        return params

    return weights_for


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
        except _Skip as exc:
            where = f" ({c.where})" if c.where else ""
            skipped.append(f"{clip(c.node.op_type, 40)} node {clip(repr(module), 80)}{where} "
                           f"{exc}")
    states = walk.state_lines(graph) if not walk.found else []
    return Found(tuple(modules),
                 tuple([*skipped, *walk.skipped, *walk.unknown_lines(), *states]))
