"""ONNX: what a recurrent node's operator defines — its gate layout, attributes (each of the
type the standard gives it), direction and activations — read from the node and checked
(the ONNX reader's helper; :mod:`._onnx`'s docstring gives the rules).

:data:`LAYOUTS` says how ``LSTM``, ``GRU`` and ``RNN`` stack their gates, in gateflow's
names (:data:`QLSTM`: onnxruntime's ``DynamicQuantizeLSTM``); :func:`attributes` reads a
node's attributes once their types are checked; :func:`check_attributes` refuses those that
change the cell; :func:`activations` makes the roles of a cell variant from
``activations``, ``activation_alpha`` and ``activation_beta``; :func:`base_cell` names the
cell. A node that cannot be read raises :class:`Skip`, whose text completes
"<op> node '<name>' ..."; :func:`text` makes a name from the file safe for one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gateflow._errors import GateflowError
from gateflow.models._checks import clip

if TYPE_CHECKING:
    from onnx import NodeProto

    from gateflow.models.formats._onnx_scope import Scope

__all__ = ["DIRECTIONS", "FLOATS", "LAYOUTS", "QLSTM", "Layout", "Skip", "activations",
           "attributes", "base_cell", "check_attributes", "check_place", "node_phrase", "text",
           "type_name", "type_of"]


@dataclass(frozen=True)
class Layout:
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
_LSTM = Layout(("W_i", "W_o", "W_f", "W_g"), ("U_i", "U_o", "U_f", "U_g"), _LSTM_B, _LSTM_B,
               ("gate", "candidate", "output"), ("Sigmoid", "Tanh", "Tanh"),
               ("input_forget", "layout"))
LAYOUTS = {
    "LSTM": _LSTM,
    "GRU": Layout(("W_z", "W_r", "W_n"), ("U_z", "U_r", "U_n"), (*_GRU_B, "b_in"),
                  (*_GRU_B, "b_hn"), ("gate", "candidate"), ("Sigmoid", "Tanh"),
                  ("linear_before_reset", "layout")),
    "RNN": Layout(("W",), ("U",), ("b",), ("b",), ("candidate",), ("Tanh",), ("layout",)),
}
QLSTM = Layout(_LSTM.ih, _LSTM.hh, _LSTM.bias_w, _LSTM.bias_r, _LSTM.roles, _LSTM.defaults,
               ("input_forget",))
_COMMON = ("activation_alpha", "activation_beta", "activations", "clip", "direction",
           "hidden_size", "output_sequence")  # output_sequence: opset 1 only
DIRECTIONS = {"forward": ("forward",), "reverse": ("reverse",),
              "bidirectional": ("forward", "reverse")}
FLOATS = ("float32", "float64", "float16", "bfloat16")


# -- one node -------------------------------------------------------------------------------
class Skip(Exception):
    """A node gateflow does not read; ``str(exc)`` completes "<op> node '<name>' ..."."""


# -- attributes -----------------------------------------------------------------------------
#: The type (``AttributeProto.AttributeType``'s name) each attribute the readers use has in the
#: operators' definitions; onnxruntime refuses a node whose attribute has another type.
_TYPES = {"activation_alpha": "FLOATS", "activation_beta": "FLOATS", "activations": "STRINGS",
          "clip": "FLOAT", "direction": "STRING", "hidden_size": "INT", "input_forget": "INT",
          "layout": "INT", "linear_before_reset": "INT", "output_sequence": "INT"}


def text(value: str, limit: int) -> str:
    """A name from the file for a one-line message: unprintable characters escaped, clipped."""
    if not value.isprintable():
        value = value.encode("unicode_escape", "backslashreplace").decode("ascii")
    return clip(value, limit)


def type_of(attr) -> str:
    """An attribute's type (``AttributeProto.AttributeType``'s name), for messages."""
    from onnx import AttributeProto

    try:
        return AttributeProto.AttributeType.Name(attr.type)
    except ValueError:  # a type code the protocol does not define
        return f"code {int(attr.type)}"


def attributes(node: NodeProto, scope: Scope) -> dict[str, Any]:
    """The node's attributes by name, each of the type the operator gives it (checked before
    its value is read: a TENSOR ``clip`` or a GRAPH ``activations`` is skipped with one line,
    never printed); an attribute the operators do not define is listed with value None (the
    caller skips the node for it)."""
    from onnx import helper

    out: dict[str, Any] = {}
    for name, a in scope.attributes_of(node):
        if name in out:
            raise Skip(f"has attribute {text(repr(name), 40)} twice; re-export the model")
        want = _TYPES.get(name)
        if want is None:
            out[name] = None  # not read: check_attributes names it
            continue
        got = type_of(a)
        if got != want:
            raise Skip(f"has attribute {name} of type {got}; the operators define it as "
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


def activations(layout: Layout, attrs: dict[str, Any], nd: int
                ) -> tuple[dict[str, tuple], list[str]]:
    """The node's activations as role -> (gateflow name, *parameters), the same for every
    direction, and the lines of what was assumed; Skip where they cannot be read."""
    k = len(layout.roles)
    given = attrs.get("activations")
    names = [str(a) for a in (given if isinstance(given, list) else [given])] \
        if given is not None else list(layout.defaults)
    listed = text(", ".join(names[:k * nd + 1]), 80)
    if given is not None and len(names) != k * nd:
        raise Skip(f"has {len(names)} activations ({listed}); the operator expects {k} per "
                   f"direction, {k * nd} in all")
    names = names * (nd if given is None else 1)
    unknown = [a for a in names if a.lower() not in _ACTIVATIONS]
    if unknown:
        raise Skip(f"has activation {text(repr(unknown[0]), 40)}, which the ONNX operators "
                   "do not define")
    alphas = [float(a) for a in attrs.get("activation_alpha", [])]
    betas = [float(b) for b in attrs.get("activation_beta", [])]
    readings = [_resolve(names, _read_params(names, alphas, betas, by_position=False)),
                _resolve(names, _read_params(names, alphas, betas, by_position=True))]
    if readings[0] != readings[1]:
        raise Skip(f"has activations={listed} with activation_alpha="
                   f"{clip(str(alphas), 80)} and activation_beta={clip(str(betas), 80)}, "
                   "which the standard lets be read two ways "
                   "(a value for each activation that takes one, as onnxruntime does, or "
                   "one value per activation, by position, as ONNX's reference does) giving "
                   "different functions; gateflow does not guess")
    assumed = []
    resolved = []
    for raw, (name, params, defaulted) in zip(names, readings[0]):
        if any(p is None for p in params):
            raise Skip(f"has activation {raw} without its parameters "
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
        raise Skip(f"has activations={listed}, different in its two directions; gateflow "
                   "reads a bidirectional node as one cell")
    return dict(zip(layout.roles, per[0])), assumed


def check_attributes(op: str, layout: Layout, attrs: dict[str, Any]) -> list[str]:
    """Refuse attributes that change the cell; the notes the others call for."""
    for name in attrs:
        if name not in _COMMON and name not in layout.extra:
            raise Skip(f"has attribute {text(repr(name), 40)}, which the {op} operator does "
                       "not define; re-export the model")
    if "clip" in attrs:
        value = float(attrs["clip"])
        if not (math.isinf(value) or value >= float(np.finfo(np.float32).max)):
            raise Skip(f"has clip={value:g}: its gates' and cell's pre-activations are "
                       f"clipped to [-{value:g}, {value:g}], which changes the cell's function "
                       "wherever they reach it; gateflow reads cells without clipping, "
                       "re-export without clip")
    if attrs.get("input_forget", 0) != 0:
        raise Skip(f"has input_forget={attrs['input_forget']!r} (coupled input and forget "
                   "gates), which gateflow does not read; re-export with input_forget=0")
    notes = []
    layout_attr = attrs.get("layout", 0)
    if layout_attr not in (0, 1):
        raise Skip(f"has layout={layout_attr!r}; the ONNX operator defines 0 and 1")
    if layout_attr == 1:
        notes.append("layout=1: X and Y are batch-major (batch, time, features)")
    return notes


def type_name(dtype: str) -> str:
    """``ONNX data type 10 (FLOAT16)`` for a NumPy type's name, for messages (the name
    itself where ONNX has none)."""
    from onnx import TensorProto, helper

    try:
        code = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        return f"ONNX data type {code} ({TensorProto.DataType.Name(code)})"
    except Exception:  # a type NumPy or ONNX cannot name
        return dtype


def base_cell(op: str, attrs: dict[str, Any], peepholes: bool) -> tuple[str, list[str]]:
    """The cell the operator makes, before its activations (``lstm``, ``lstm-peephole``,
    ``gru``, ``gru-cho``, ``rnn``), and the notes that say why; Skip for a
    ``linear_before_reset`` the operator does not define."""
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
        raise Skip(f"has linear_before_reset={lbr!r}; the ONNX operator defines 0 and 1")
    return "rnn", []


def node_phrase(op: str, module: str) -> str:
    """``ONNX LSTM node 'name'``, for messages."""
    return f"ONNX {op} node {text(repr(module), 80)}"


def check_place(label: str, directions: tuple[str, ...], layer: int, direction: str) -> None:
    """Refuse a layer other than 0 (a node is one layer) or a direction the node does not
    run, naming the node (``label``)."""
    if isinstance(layer, bool) or layer != 0:
        raise GateflowError(f"{label} has one layer; layer must be 0, got "
                            f"{clip(repr(layer), 40)}")
    if direction not in directions:
        raise GateflowError(f"{label} runs {' and '.join(directions)}; direction must be "
                            f"{' or '.join(map(repr, directions))}, got "
                            f"{clip(repr(direction), 40)}")
