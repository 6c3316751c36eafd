"""What a model file holds: one :class:`Recurrent` per recurrent module, node or layer.

Every model format (PyTorch state_dicts in any container, ONNX graphs, Keras archives)
describes what it found with this record, so that ``gateflow inspect``, ``--module``,
``--layer``, ``--direction`` and :func:`gateflow.load_model` work the same on all of them.

A record carries its sizes and a ``weights(cell, layer, direction)`` function that returns
the weights of one layer in one direction in gateflow's names (float64, checked by
:func:`gateflow.cells._params.check_params`). Mapping the framework's gate order onto
gateflow's names is the format module's job, and only that module's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DIRECTIONS", "LAYOUTS", "Found", "Recurrent"]

#: Directions, as PyTorch names them: "reverse" runs over the time-reversed sequence.
DIRECTIONS = ("forward", "reverse")

#: How a module reads its inputs: (T, B, d) "time-major", (B, T, d) "batch-major", or
#: "unknown" when the file does not say (a PyTorch state dict does not record batch_first).
LAYOUTS = ("time-major", "batch-major", "unknown")


@dataclass(frozen=True)
class Recurrent:
    """One recurrent module (PyTorch), node (ONNX) or layer (Keras) of a model file.

    ``module`` is the name ``--module`` takes: a PyTorch key prefix without its trailing dot
    (``encoder.rnn``; ``""`` for keys without a prefix), an ONNX node's name, a Keras layer's
    name. ``cells`` lists the gateflow cells the weights fit, in order of preference; the
    file says which one it is when ``cell`` is set (``None``: the weights cannot tell, as
    for ``nn.RNN``'s tanh and relu, and ``note`` says so).
    """

    module: str
    framework: str  # "PyTorch", "ONNX", "Keras"
    kind: str  # the framework's own name: "nn.LSTM", "nn.GRUCell", "LSTM node", "GRU layer"
    cell: str | None  # the gateflow cell the file says it is, None when it cannot tell
    cells: tuple[str, ...]  # every gateflow cell these weights fit (cell first when known)
    layers: int
    directions: tuple[str, ...]  # ("forward",) or ("forward", "reverse")
    hidden: int  # n
    input: int  # d of layer 0 (layer l > 0 reads the layer below: n, or 2n if bidirectional)
    #: (cell name, layer, direction) -> that layer's weights in gateflow names, float64
    weights: Callable[[str, int, str], dict[str, np.ndarray]] = field(compare=False, repr=False)
    proj: int = 0  # PyTorch proj_size (h has proj units, c has hidden units); 0: none
    note: str = ""  # what a user must know, e.g. "nn.RNN: give --cell rnn or rnn-relu"
    #: the input axis order the framework gives this module (see LAYOUTS)
    layout: str = "unknown"
    #: where in the file it sits, when that is not obvious from ``module``: "state dict
    #: under key 'model_state'", "If node 'cond', then-branch", ...
    where: str = ""
    #: what gateflow assumed that the file did not say, or what was lost in reading it, one
    #: line each, printed once per run ("recurrent_activation: hard_sigmoid, the default
    #: of Keras 2.2.0 that wrote the file", "int8 weights dequantized: the analysis is of
    #: the dequantized float model", "float16 weights: 11 significant bits")
    assumed: tuple[str, ...] = ()
    #: False when the file records no activations (a weights-only Keras file): then any
    #: activations on the same equations fit (``--cell 'lstm[gate=...]'``), and ``cell``
    #: is only the writer's default
    activations_declared: bool = True
    #: (cell name, layer, direction) -> the initial state the file fixes for that layer in
    #: that direction, by gateflow state block (``{"h": (n,) or (B, n), "c": ...}``,
    #: float64; a block left out starts from zeros; ``{}``: zeros), or None when the file
    #: fixes none (an ONNX node's ``initial_h``/``initial_c`` constants). A run starts from
    #: it unless given another (``--s0``).
    initial: Callable[[str, int, str], dict[str, np.ndarray]] | None = field(
        default=None, compare=False, repr=False)
    #: where ``initial`` comes from, in words: "ONNX LSTM node 'rnn': initial_h from
    #: initializer 'h0'"; "" when ``initial`` is None
    initial_from: str = ""

    @property
    def bidirectional(self) -> bool:
        return len(self.directions) == 2

    def input_size(self, layer: int) -> int:
        """d of ``layer``: the model's input for layer 0, the layer below's output above."""
        if layer == 0:
            return self.input
        return (self.proj or self.hidden) * len(self.directions)

    def summary(self) -> dict:
        """The record as JSON-ready data (``gateflow inspect --json``)."""
        return {"module": self.module, "framework": self.framework, "kind": self.kind,
                "cell": self.cell, "cells": list(self.cells), "layers": self.layers,
                "directions": list(self.directions), "hidden": self.hidden,
                "input": self.input, "proj": self.proj, "note": self.note,
                "layout": self.layout, "where": self.where, "assumed": list(self.assumed)}


@dataclass(frozen=True)
class Found:
    """What reading a model file gave: its recurrent ``modules``, and one line for each
    thing that was ``skipped`` (a subgraph not opened, an unknown op, an unreadable node,
    arrays that match no vocabulary), so that "nothing found" is never said when something
    was skipped."""

    modules: tuple[Recurrent, ...]
    skipped: tuple[str, ...] = ()

    def __iter__(self):  # a Found unpacks like the tuple of modules it replaced
        return iter(self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    def __getitem__(self, index: int) -> Recurrent:
        return self.modules[index]
