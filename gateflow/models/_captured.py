"""One captured recurrent module (:class:`Captured`), built from the calls it ran.

Each module that ran gives one record, with everything :func:`gateflow.all_lags` needs to
measure that module on the data it actually saw:

* ``params[(layer, direction)]``: the module's own weights in gateflow's names (float64),
  mapped by :func:`gateflow.from_torch_state_dict`, exactly as the file route maps them;
* ``inputs[(layer, direction)]``: the input sequence of that layer and direction,
  time-major (T, B, d), float64. Layer 0 reads the module's input (``batch_first``
  transposed, an unbatched (T, d) input as B = 1). Layer l > 0 reads the output of layer
  l − 1 (both directions, concatenated, for a bidirectional module): that is internal to
  PyTorch's kernel, so it is recomputed here in float64 by a one-layer ``nn.<kind>`` with
  layer l − 1's weights, from the same initial state (a float32 model's own layer l − 1
  output differs from it by float32 rounding). Dropout between layers (training mode) is
  not applied. The reverse direction's input is already time-reversed: gateflow runs the
  reverse direction forward over ``x[::-1]``, so its lag k is k steps *later* in the
  original time;
* ``s0[(layer, direction)]``: the initial states (``h``, and ``c`` for an LSTM), from the
  ``hx`` the module was given (``(L·D, B, n)``, layer-major, then direction), else zeros.

A module called several times (an ``nn.GRUCell`` in a decoder's Python loop, an ``nn.LSTM``
fed one step at a time) gives one sequence of all its calls in call order, starting from the
state of the first call. ``carried`` says whether every call started from exactly the state
the previous call returned (``torch.equal``); when it did not, the calls are not one
recurrence, and ``note`` says so.

The calls come from a live model's hooks (:mod:`._capture`) or a TorchScript model's tapped
graph (:mod:`._capture_script`), one :class:`_Call` each; the weights they ran with are
held as copies (:func:`_snapshot`) and compared bit for bit (:func:`_changed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateflow._errors import GateflowError
from gateflow._memory import check_fits
from gateflow.cells._record import Cell
from gateflow.cells._stack import stack
from gateflow.models._checks import as_cell, clip
from gateflow.models._model import direction_of, layer_of
from gateflow.models.formats._pytorch import from_torch_state_dict
from gateflow.models.formats._recurrent import DIRECTIONS, Recurrent

__all__ = ["Captured"]

Params = dict[str, np.ndarray]
Key = tuple[int, str]  # (layer, direction)

#: The PyTorch recurrent modules, by class name: (the module it is a step of, is a *Cell).
_KINDS = {"LSTM": ("LSTM", False), "GRU": ("GRU", False), "RNN": ("RNN", False),
          "LSTMCell": ("LSTM", True), "GRUCell": ("GRU", True), "RNNCell": ("RNN", True)}
_MATRICES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


@dataclass(frozen=True, eq=False)
class Captured:
    """One recurrent module of a live model, as it ran (see the module docstring).

    ``params``, ``inputs`` and ``s0`` are keyed by ``(layer, direction)``; ``inputs`` are
    time-major (T, B, d) float64, the reverse direction's already time-reversed. ``calls``:
    how many times the module ran (their inputs are concatenated in call order);
    ``carried``: whether each call started from the state the previous one returned.
    """

    module: str  # its name in model.named_modules() (and the model's state_dict)
    kind: str  # "nn.LSTM", "nn.GRUCell", ...
    cell: str  # the gateflow cell: lstm, gru, rnn or rnn-relu
    layers: int
    directions: tuple[str, ...]
    hidden: int  # n
    input: int  # d of layer 0
    params: dict[Key, Params] = field(repr=False)
    inputs: dict[Key, np.ndarray] = field(repr=False)
    s0: dict[Key, dict[str, np.ndarray]] = field(repr=False)
    calls: int = 1
    carried: bool = True
    note: str = ""
    proj: int = 0  # nn.LSTM's proj_size (h has proj units, c has hidden); 0: none
    #: how the module read its input: "batch-major" (batch_first=True), "time-major", or
    #: "unknown" for a *Cell (one step per call; the sequence is the caller's)
    layout: str = "unknown"

    @property
    def bidirectional(self) -> bool:
        return len(self.directions) == 2

    @property
    def T(self) -> int:
        return int(self.inputs[(0, "forward")].shape[0])

    @property
    def B(self) -> int:
        return int(self.inputs[(0, "forward")].shape[1])

    @property
    def record(self) -> Recurrent:
        """The module as :func:`gateflow.find_models` would list it from the state_dict."""
        return Recurrent(module=self.module, framework="PyTorch", kind=self.kind,
                         cell=self.cell, cells=(self.cell,), layers=self.layers,
                         directions=self.directions, hidden=self.hidden, input=self.input,
                         proj=self.proj,
                         weights=lambda cell, layer, direction: self.params[(layer, direction)],
                         note=self.note, layout=self.layout)

    def describe(self, layer: int | str = 0, direction: str = "forward") -> str:
        """``nn.LSTM 'encoder.rnn', layer 1, forward`` for titles and tables."""
        name = f" {self.module!r}" if self.module else ""
        where = "all layers" if layer == "all" else f"layer {layer}"
        return f"{self.kind}{name}, {where}, {direction}"

    def keys(self) -> list[tuple[int | str, str]]:
        """Every (layer, direction) this module can be analysed at: each layer and direction,
        then ``("all", "forward")`` for a unidirectional stack."""
        out: list[tuple[int | str, str]] = [
            (k, d) for k in range(self.layers) for d in self.directions]
        if self.layers > 1 and not self.bidirectional:
            out.append(("all", "forward"))
        return out

    def selection(self, layer: int | str | None = None, direction: str | None = None
                  ) -> tuple[Cell, Params, np.ndarray, dict[str, np.ndarray]]:
        """``(cell, params, x, s0)`` of one layer (or ``"all"``, the unidirectional stack as
        one recurrence, with blocks ``h_l1/h_l0`` …) and direction, ready for
        ``gateflow.all_lags(cell, params, x, s0=s0)`` and :func:`gateflow.decay`."""
        record = self.record
        layer = layer_of(record, layer)
        direction = direction_of(record, direction)
        base = as_cell(self.cell)
        if layer == "all" and self.layers > 1:
            cell = stack(base, self.layers)
            params = {f"{p}_l{k}": v for k in range(self.layers)
                      for p, v in self.params[(k, direction)].items()}
            s0 = {f"{s}_l{k}": v for k in range(self.layers)
                  for s, v in self.s0[(k, direction)].items()}
            return cell, params, self.inputs[(0, direction)], s0
        key = (0 if layer == "all" else int(layer), direction)
        return base, dict(self.params[key]), self.inputs[key], dict(self.s0[key])


# -- one call of a module -----------------------------------------------------------------
@dataclass
class _Call:
    x: Any  # torch tensor (T, B, d), time-major, the module's dtype
    hx: dict[str, Any]  # "h" (and "c"): (L·D, B, n), the state it started from
    out: dict[str, Any]  # "h" (and "c"): (L·D, B, n), the state it returned


# -- the weights a module ran with ---------------------------------------------------------
def _snapshot(live: dict[str, Any], where: str) -> dict[str, Any]:
    """A copy of the weights ``live``, sized from their shapes first (an expanded view is
    a few bytes until copied): the copy, and the float64 arrays made from it later."""
    check_fits(sum(t.numel() * (t.element_size() + 16) for t in live.values()),
               f"capturing the weights of {where}", "capture a smaller model")
    return {k: t.detach().clone() for k, t in live.items()}


def _changed(torch, held: dict[str, Any], live: dict[str, Any]) -> str | None:
    """The first weight of ``live`` whose bits differ from ``held`` (NaN included), or
    that is new or gone; None when every weight is as it was."""
    if set(held) != set(live):
        return next(iter(sorted(set(held) ^ set(live))))
    for k, t in live.items():
        a, b = held[k], t.detach()
        if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
            return k
        if not torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)):
            return k
    return None


def _changed_while_running(where: str, changed: str, during: str = "the module") -> str:
    return (f"{where}: its weight {clip(repr(changed), 60)} changed while {during} ran (a "
            "forward that modifies the weights?), so capture cannot tell which values it "
            "computed with; keep the weights fixed during the forward")


# -- building the records -------------------------------------------------------------------
def _numpy(t) -> np.ndarray:
    import torch

    return np.array(t.detach().to(device="cpu", dtype=torch.float64).numpy(), copy=True)


def _weights(held: dict[str, Any], layer: int, direction: str, is_cell: bool
             ) -> dict[str, Any]:
    """One layer and direction's PyTorch tensors (of ``held``, the module's weights as they
    were when it ran, by attribute name), named as a single-layer module's."""
    suffix = "" if is_cell else f"_l{layer}" + ("_reverse" if direction == "reverse" else "")
    out = {}
    for m in _MATRICES:
        t = held.get(f"{m}{suffix}")
        if t is not None:
            out[f"{m}_l0"] = t
    return out


def _cell_name(module, base: str) -> str:
    if getattr(module, "proj_size", 0):
        return "lstm-proj"  # h = P (o ⊙ tanh c) has proj_size units
    if base != "RNN":
        return base.lower()
    return "rnn" if module.nonlinearity == "tanh" else "rnn-relu"


def _one_layer(torch, module, held: dict[str, Any], base: str, layer: int, d: int):
    """A float64 single-layer nn.<base> with layer ``layer``'s weights (both directions),
    as they were when the module ran (``held``)."""
    extra = {"nonlinearity": module.nonlinearity} if base == "RNN" else {}
    if getattr(module, "proj_size", 0):
        extra["proj_size"] = module.proj_size
    one = getattr(torch.nn, base)(d, module.hidden_size, num_layers=1, bias=module.bias,
                                  bidirectional=module.bidirectional, dtype=torch.float64,
                                  **extra)
    sd = {}
    for direction in (DIRECTIONS if module.bidirectional else DIRECTIONS[:1]):
        tail = "_reverse" if direction == "reverse" else ""
        for k, t in _weights(held, layer, direction, False).items():
            sd[k + tail] = t.detach().to(device="cpu", dtype=torch.float64)
    one.load_state_dict(sd)
    return one


def _layer_inputs(torch, module, held: dict[str, Any], base: str,
                  calls: list[_Call]) -> list[list[Any]]:
    """Per layer, per call: the (T, B, d_l) float64 sequence that layer read (forward time)."""
    D = 2 if module.bidirectional else 1
    xs = [c.x.to(device="cpu", dtype=torch.float64) for c in calls]
    per_layer = [xs]
    for layer in range(1, module.num_layers):
        one = _one_layer(torch, module, held, base, layer - 1, per_layer[-1][0].shape[-1])
        below = []
        for c, x in zip(calls, per_layer[-1]):
            rows = slice((layer - 1) * D, layer * D)
            hx = tuple(c.hx[s][rows].to(device="cpu", dtype=torch.float64)
                       for s in (("h", "c") if base == "LSTM" else ("h",)))
            out, _ = one(x, hx if base == "LSTM" else hx[0])
            below.append(out)
        per_layer.append(below)
    return per_layer


def _build(torch, name: str, module, calls: list[_Call], held: dict[str, Any], cls: str,
           kind_of: tuple[str, bool], said: Sequence[str] = ()) -> Captured:
    """The record of one module from its calls and ``held``, its weights as the calls used
    them (the same in every call: capture refuses weights that change). ``cls`` is the
    module's class name (a TorchScript module's ``original_name``), ``kind_of`` its
    entry of :data:`_KINDS`, ``said`` what reading the module noted."""
    base, is_cell = kind_of
    kind = f"nn.{base}Cell" if is_cell else f"nn.{base}"
    where = f"module {name!r} ({kind})" if name else kind
    cell = _cell_name(module, base)
    layers = 1 if is_cell else int(module.num_layers)
    directions = DIRECTIONS if (not is_cell and module.bidirectional) else DIRECTIONS[:1]
    notes = []
    if cls not in _KINDS:
        notes.append(f"a subclass ({cls}) of {kind}: read as {kind}")
    shape = calls[0].x.shape[1:]
    if any(c.x.shape[1:] != shape for c in calls):
        notes.append(f"called {len(calls)} times with different batch or input sizes; only "
                     "the first call is kept")
        calls = calls[:1]
    states = tuple(calls[0].out)
    carried = all(torch.equal(now.hx[s], before.out[s])
                  for before, now in zip(calls, calls[1:]) for s in states)
    if not carried:
        notes.append(f"the state is not carried from call to call (a call did not start from "
                     f"the state the previous one returned): the {len(calls)} calls, "
                     "concatenated here, are not one recurrence")
    notes += said
    if layers > 1 and module.training and module.dropout > 0:
        notes.append(f"dropout={module.dropout:g} between layers is active (training mode) "
                     "and is left out of the inputs of layers 1+; call model.eval() first")
    D = len(directions)
    if is_cell:
        per_layer = [[c.x.to(dtype=torch.float64) for c in calls]]
    else:
        per_layer = _layer_inputs(torch, module, held, base, calls)
    params: dict[Key, Params] = {}
    inputs: dict[Key, np.ndarray] = {}
    s0: dict[Key, dict[str, np.ndarray]] = {}
    for layer in range(layers):
        for j, direction in enumerate(directions):
            key = (layer, direction)
            sd = {k: _numpy(v) for k, v in _weights(held, layer, direction, is_cell).items()}
            try:
                params[key] = from_torch_state_dict(cell, sd)
            except GateflowError as exc:
                raise GateflowError(f"{where}, layer {layer}, {direction}: {exc}") from None
            seqs = [_numpy(x) for x in per_layer[layer]]
            if direction == "reverse":
                seqs = [s[::-1] for s in seqs]
            inputs[key] = np.ascontiguousarray(np.concatenate(seqs, axis=0))
            s0[key] = {s: _numpy(calls[0].hx[s][layer * D + j]) for s in states}
    return Captured(module=name, kind=kind, cell=cell, layers=layers, directions=directions,
                    hidden=int(module.hidden_size), input=int(module.input_size),
                    params=params, inputs=inputs, s0=s0, calls=len(calls), carried=carried,
                    note="; ".join(notes), proj=int(getattr(module, "proj_size", 0)),
                    layout="unknown" if is_cell else (
                        "batch-major" if module.batch_first else "time-major"))
