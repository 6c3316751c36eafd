"""A user's own model: which recurrent modules a file holds, and one of them as a cell and
its parameters.

:func:`find_models` lists the recurrent modules of any file gateflow reads (PyTorch
state_dicts and checkpoints in ``.pt``/``.pth``/``.ckpt``/``.safetensors``/``.npz``, ONNX
``.onnx``, Keras ``.keras``/``.h5``); :func:`select_model` picks one module, one layer (or
the whole stack) and one direction, and checks a ``--cell`` against what the file says.

* ``layer=L`` analyses layer L alone: its input is whatever the layer below emits (n, or 2n
  for a bidirectional module); ``layer="all"`` analyses the stack as one recurrence
  (:func:`gateflow.cells._stack.stack`), with blocks ``"h_l1/h_l0"`` and so on. A
  single-layer module keeps its plain blocks (``"h/h"``) either way.
* ``direction="reverse"`` is the second direction of a bidirectional module: it runs over
  the time-reversed sequence, as PyTorch, ONNX and Keras run it, so its lag k is k steps
  *later* in the original time. A bidirectional stack is not one causal recurrence (layer
  l + 1 reads the reverse direction of layer l, which depends on the future), so
  ``layer="all"`` is refused for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateflow._errors import GateflowError, arg
from gateflow._validate import shown
from gateflow.cells._record import Cell
from gateflow.cells._stack import output_block, stack
from gateflow.models._checks import as_cell, float_dtype
from gateflow.models._specs import ModelRef, layer_index
from gateflow.models.formats import read_models
from gateflow.models.formats._files import as_path, label
from gateflow.models.formats._recurrent import DIRECTIONS, Found, Recurrent

__all__ = ["Selection", "batch_of", "direction_of", "find_models", "initial_state", "layer_of",
           "load_initial_state", "load_model", "select", "select_model", "skipped_summary"]

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class Selection:
    """One module, layer (or ``"all"``) and direction of a model file, ready to analyse.

    ``s0`` is the initial state the file fixes for it, by state block of ``cell`` (an ONNX
    node's ``initial_h``/``initial_c`` constants: ``{"h": (n,) or (B, n), "c": ...}``;
    ``h_l0``, ``c_l0``, … for a stack), None when the file fixes none (zeros); ``s0_from``
    says where it comes from. ``gateflow decay`` and ``lyapunov`` start from it unless given
    ``--s0``; with the Python API pass it on yourself:
    ``all_lags(sel.cell, sel.params, x, s0=sel.s0)``."""

    cell: Cell
    params: Params
    model: Recurrent
    layer: int | str
    direction: str
    s0: dict[str, np.ndarray] | None = None
    s0_from: str = ""

    @property
    def reverse(self) -> bool:
        """Run the inputs time-reversed (the module's reverse direction)."""
        return self.direction == "reverse"

    @property
    def input_size(self) -> int:
        return self.model.input_size(0 if self.layer == "all" else int(self.layer))

    def layer_inputs(self, x: np.ndarray) -> np.ndarray:
        """What this layer reads when the model reads ``x`` (T, B, d), time-major: ``x``
        itself for layer 0 (and ``"all"``); for layer L > 0, the outputs h of layers
        0..L−1 run on ``x`` from their initial states (zeros unless the file fixes them:
        :func:`initial_state`), both directions concatenated (the reverse
        one run over the time-reversed sequence and turned back), as the framework
        computes them. Not yet time-reversed for this selection's own direction."""
        from gateflow.numeric._chain import states

        top = 0 if self.layer == "all" else int(self.layer)
        for k in range(top):  # (then self.cell is the module's own cell, not a stack)
            outs = []
            for direction in self.model.directions:
                w = self.model.weights(self.cell.name, k, direction)
                start = initial_state(self.model, self.cell.name, k, direction)
                if start is not None:
                    start = batch_of(start, x.shape[1], self.model.initial_from)
                rev = direction == "reverse"
                h = states(self.cell, w, x[::-1] if rev else x,
                           start)[output_block(self.cell)][1:]
                outs.append(h[::-1] if rev else h)
            x = np.ascontiguousarray(np.concatenate(outs, axis=2))
        return x

    @property
    def assumed(self) -> tuple[str, ...]:
        """What the run assumes that the file did not say (:attr:`Recurrent.assumed`), and,
        for a layer above the first, that its inputs are the model's inputs run through the
        layers below."""
        if self.layer == "all" or int(self.layer) == 0:
            return self.model.assumed
        top = int(self.layer)
        below = "layer 0" if top == 1 else f"layers 0..{top - 1}"
        both = " (both directions, concatenated)" if self.model.bidirectional else ""
        return (*self.model.assumed,
                f"layer {top} reads what {below} emit{'s' if top == 1 else ''}{both}: the "
                f"inputs are the model's (d={self.model.input}), run through the layers below")

    def describe(self) -> str:
        """``nn.LSTM 'encoder.rnn', layer 1, forward`` for titles and messages."""
        name = f" {self.model.module!r}" if self.model.module else ""
        layer = "all layers" if self.layer == "all" else f"layer {self.layer}"
        return f"{self.model.kind}{name}, {layer}, {self.direction}"


def initial_state(model: Recurrent, cell: str, layer: int, direction: str
                  ) -> dict[str, np.ndarray] | None:
    """The initial state ``model``'s file fixes for ``layer`` in ``direction``, by state
    block (:attr:`Recurrent.initial`), float64; None when it fixes none (zeros)."""
    if model.initial is None:
        return None
    out = model.initial(cell, layer, direction)
    return {b: np.asarray(v, dtype=np.float64) for b, v in out.items()} or None


def batch_of(s0: dict[str, np.ndarray], B: int, source: str) -> dict[str, np.ndarray]:
    """A file's initial state ``s0`` checked against a run of ``B`` sequences: a block given
    per sequence ((B', n)) needs B' = B."""
    for b, v in s0.items():
        if v.ndim == 2 and v.shape[0] != B:
            raise GateflowError(
                f"the initial state the model file fixes ({source}) holds {v.shape[0]} "
                f"sequences (block {b!r}) but the run has {B}; give {v.shape[0]} sequences "
                f"({arg('batch')} {v.shape[0]}, or {arg('inputs')} with {v.shape[0]} "
                f"sequences), or another initial state with {arg('s0')} FILE")
    return s0


def find_models(path, *, rename=None) -> Found:
    """Every recurrent module, node or layer in the file at ``path``, and one line for each
    thing that was skipped (a :class:`Found`: it iterates over the modules). ``rename``
    maps an array file's names first: ``{"enc_w_ih": "weight_ih_l0", ...}``, or patterns
    with one ``*`` on each side, ``{"enc_*": "rnn.*"}`` (the command line's ``--map``)."""
    return read_models(as_path(path, "model"), rename=rename)


def skipped_summary(skipped: tuple[str, ...], most: int = 3) -> str:
    """What was skipped, for a one-line message: the first ``most`` lines and a count."""
    shown_ = "; ".join(skipped[:most])
    more = len(skipped) - most
    return shown_ + (f"; and {more} more (gateflow inspect lists them)" if more > 0 else "")


def _pick(models: tuple[Recurrent, ...], module, path) -> Recurrent:
    listed = ", ".join(repr(m.module) for m in models)
    if module is None:
        if len(models) > 1:
            raise GateflowError(f"{label(path)} holds {len(models)} recurrent modules "
                                f"({listed}); pick one with {arg('module')} NAME")
        return models[0]
    for m in models:
        if m.module == module:
            return m
    raise GateflowError(f"{label(path)} has no recurrent module {module!r}; it holds "
                        f"{listed} (see gateflow inspect)")


def _cell_for(model: Recurrent, cell) -> Cell:
    """The cell to analyse ``model`` with: the one the file says, or ``cell`` when it agrees
    (or when the file cannot tell, among the cells its weights fit)."""
    where = f"module {model.module!r} ({model.kind})" if model.module else model.kind
    if cell is None:
        if model.cell is None:
            raise GateflowError(f"{where}: {model.note or 'the file does not say which cell'}")
        return as_cell(model.cell)
    chosen = as_cell(cell)
    if chosen.name not in model.cells and not _same_equations(model, chosen):
        says = (f"cell {model.cell!r}" if model.cell else
                f"one of the cells {', '.join(map(repr, model.cells))}")
        raise GateflowError(f"{arg('cell')} {chosen.name} contradicts the file: {where} is "
                            f"{says}; drop {arg('cell')} or give {arg('cell')} "
                            f"{model.cells[0]}")
    return chosen


def _same_equations(model: Recurrent, chosen: Cell) -> bool:
    """A file that records no activations fits ``chosen`` when it is a variant (other
    activations) of a cell family the weights fit."""
    if model.activations_declared:
        return False
    from gateflow.cells._activations import parse_name

    def family(name: str) -> str | None:
        try:
            return parse_name(name)[1]
        except GateflowError:
            return None

    return family(chosen.name) in {family(c) for c in model.cells} - {None}


def layer_of(model: Recurrent, layer) -> int | str:
    """``layer`` checked against ``model``: an index in range, or ``"all"`` (refused for a
    bidirectional stack); None is layer 0 of a single-layer module, an error otherwise."""
    where = f"module {model.module!r}" if model.module else model.kind
    if layer is None:
        if model.layers > 1:
            raise GateflowError(f"{where} has {model.layers} layers; pick one with "
                                f"{arg('layer')} 0..{model.layers - 1}, or {arg('layer')} all "
                                "for the whole stack")
        return 0
    if layer == "all":
        if model.bidirectional and model.layers > 1:
            raise GateflowError(
                f"{arg('layer')} all: {where} is a bidirectional stack, which is not one "
                "causal recurrence (each layer reads the reverse direction of the layer "
                f"below, which depends on the future); analyse one layer with {arg('layer')} L "
                f"{arg('direction')} forward|reverse")
        return "all"
    try:
        index = layer_index(layer)  # ASCII digits, bounded: not '１', not 5000 digits
    except GateflowError:
        index = None
    if not isinstance(index, int) or not 0 <= index < model.layers:
        raise GateflowError(f"{arg('layer')} {shown(layer)} is out of range: {where} has "
                            f"{model.layers} layer(s) (0..{model.layers - 1}, or all)")
    return index


def direction_of(model: Recurrent, direction) -> str:
    """``direction`` checked against ``model``'s directions; None is the only one of a
    unidirectional module, an error for a bidirectional one."""
    where = f"module {model.module!r}" if model.module else model.kind
    if direction is None:
        if model.bidirectional:
            raise GateflowError(f"{where} is bidirectional; pick {arg('direction')} forward or "
                                f"{arg('direction')} reverse")
        return model.directions[0]
    if direction not in DIRECTIONS:
        raise GateflowError(f"{arg('direction')} must be forward or reverse, got "
                            f"{shown(direction)}")
    if direction not in model.directions:
        raise GateflowError(f"{arg('direction')} {direction}: {where} has only the "
                            f"{model.directions[0]} direction")
    return direction


def _own_names(path, cell, rename=None) -> Selection:
    """A file in gateflow's own names (``W_f``, …; after ``rename``): the cell it fits."""
    from gateflow.models._params import load_params, validate_params

    if cell is None:
        raise GateflowError(f"{label(path)} holds no PyTorch, ONNX or Keras recurrent module; "
                            f"if it holds gateflow parameters, give {arg('cell')}")
    chosen = as_cell(cell)
    if rename is None:
        params = load_params(path, chosen)
    else:
        from gateflow.models.formats import read_arrays
        from gateflow.models.formats._foreign import rename as renamed

        raw = renamed(read_arrays(path), rename, repr(label(path)))
        params = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in raw.items()}
        try:
            validate_params(chosen, params)
        except GateflowError as exc:
            raise GateflowError(f"{label(path)}: {exc.marked()}") from None
    n = next(iter(params.values())).shape[0]
    d = next((params[p].shape[1] for p, k in chosen.matrices.items() if k == "input"), 0)
    model = Recurrent(module="", framework="gateflow", kind=f"{chosen.name} parameters",
                      cell=chosen.name, cells=(chosen.name,), layers=1,
                      directions=("forward",), hidden=n, input=d,
                      weights=lambda c, layer, direction: params)
    return Selection(chosen, params, model, 0, "forward")


def select_model(path, *, module=None, layer=None, direction=None, cell=None,
                 dtype=np.float64, rename=None) -> Selection:
    """One module of the file at ``path`` as a cell and its parameters (see the module
    docstring for ``layer`` and ``direction``). ``cell`` may be omitted when the file says
    what the module is; a ``cell`` that contradicts the file is an error."""
    return select(ModelRef(path, module=module, layer=layer, direction=direction, cell=cell,
                           rename=rename), dtype=dtype)


def select(ref: ModelRef, *, dtype=np.float64) -> Selection:
    """The module ``ref`` names, as a cell and its parameters (:func:`select_model`)."""
    path = as_path(ref.path, "model")
    dt = float_dtype(dtype)
    module, layer, direction, cell, rename = (ref.module, ref.layer, ref.direction, ref.cell,
                                              ref.rename)
    found = read_models(path, "params", rename=rename)
    models = found.modules
    if not models and found.skipped:
        raise GateflowError(f"{label(path)}: found no recurrent module gateflow can read; "
                            f"skipped {skipped_summary(found.skipped)}")
    if not models:
        extra = [arg(f) for f, bad in (("module", module is not None),
                                       ("layer", layer not in (None, 0, "all")),
                                       ("direction", direction not in (None, "forward")))
                 if bad]
        if extra:
            raise GateflowError(f"{label(path)} holds one cell's parameters in gateflow's own "
                                f"names, not a model: {', '.join(extra)} do not apply")
        return _own_names(path, cell, rename)
    model = _pick(models, module, path)
    base = _cell_for(model, cell)
    layer = layer_of(model, layer)
    direction = direction_of(model, direction)

    def weights(k: int) -> Params:
        try:
            return model.weights(base.name, k, direction)
        except GateflowError as exc:
            raise GateflowError(f"{label(path)}: {exc.marked()}") from None

    def initial(k: int) -> Params:
        try:
            return initial_state(model, base.name, k, direction) or {}
        except GateflowError as exc:
            raise GateflowError(f"{label(path)}: {exc.marked()}") from None

    if layer == "all" and model.layers > 1:
        chosen = stack(base, model.layers)
        params = {f"{p}_l{k}": v for k in range(model.layers) for p, v in weights(k).items()}
        s0 = {f"{b}_l{k}": v for k in range(model.layers) for b, v in initial(k).items()}
    else:
        chosen = base
        params = weights(0 if layer == "all" else int(layer))
        s0 = initial(0 if layer == "all" else int(layer))
    params = {p: np.ascontiguousarray(params[p], dtype=dt) for p in chosen.params}
    return Selection(chosen, params, model, layer, direction, s0 or None,
                     model.initial_from if s0 else "")


def load_model(path, module=None, layer=None, direction=None, *, cell=None,
               dtype=np.float64, rename=None) -> tuple[Cell, Params]:
    """The cell and parameters of one recurrent module of a model file.

    Args:
        path: a PyTorch state_dict or checkpoint (``.pt``, ``.pth``, ``.ckpt``: read with
            ``torch.load(weights_only=True)``; ``.safetensors``, ``.npz``), a TorchScript
            archive (any extension; read without running its code), an ONNX model
            (``.onnx``) or a Keras model (``.keras``, ``.weights.h5``, legacy ``.h5``). A
            file whose extension gateflow does not know is read by its content, and says so.
        module: which module, node or layer (``gateflow inspect`` lists them); needed
            when the file holds several.
        layer: a layer index, or ``"all"`` for the whole stack as one recurrence (a
            generated cell whose state blocks are ``h_l0, c_l0, h_l1, …``).
        direction: ``"forward"`` or ``"reverse"`` (needed for a bidirectional module;
            the reverse direction reads the time-reversed inputs: feed it ``x[::-1]``).
        cell: the gateflow cell, when the file cannot say (PyTorch ``nn.RNN``: ``"rnn"``
            or ``"rnn-relu"``); one that contradicts the file is an error.
        rename: new names for an array file's arrays, read before anything else:
            exact (``{"enc_w_ih": "weight_ih_l0"}``) or a pattern with one ``*`` on each
            side standing for the same text (``{"enc_*": "*"}`` drops a prefix). Arrays
            with the usual suffixes (``enc_w_ih``, ``lstm/kernel:0``) are recognised
            without it (``gateflow inspect`` says how they were read).

    Returns:
        ``(cell, params)``, ready for :func:`gateflow.all_lags` and :func:`gateflow.decay`.
        A file may also fix the module's initial state (an ONNX node's ``initial_h`` and
        ``initial_c`` constants; ``gateflow inspect`` says so): it is not among the
        parameters; :func:`gateflow.load_initial_state` with the same arguments returns it,
        to pass on as ``all_lags(cell, params, x, s0=...)`` (``gateflow decay`` starts from
        it unless given ``--s0``).
    """
    sel = select_model(path, module=module, layer=layer, direction=direction, cell=cell,
                       dtype=dtype, rename=rename)
    return sel.cell, sel.params


def load_initial_state(path, module=None, layer=None, direction=None, *, cell=None,
                       rename=None) -> dict[str, np.ndarray] | None:
    """The initial state a model file fixes for one of its modules, or None when it fixes
    none (the recurrence then starts from zeros, as the framework's does).

    The arguments are :func:`gateflow.load_model`'s. Returns ``{block: array}`` in the
    cell's state blocks (``"h"``, ``"c"``; ``"h_l0"``, … for ``layer="all"``), float64,
    each (n,) — the same for every sequence — or (B, n) when the file gives one state per
    sequence; a block left out starts from zeros. Pass it to :func:`gateflow.all_lags`
    (``s0=``) with the cell and parameters of :func:`gateflow.load_model`::

        cell, params = gf.load_model("model.onnx")
        s0 = gf.load_initial_state("model.onnx")
        res = gf.all_lags(cell, params, x, s0=s0)

    ONNX ``LSTM``/``GRU``/``RNN`` nodes fix it with constant ``initial_h``/``initial_c``
    inputs (an initializer, a ``Constant``, or a constant broadcast over the batch by
    ``Expand``/``ConstantOfShape``); an initial state fed at run time (a graph input) is
    not the file's: None, and ``gateflow inspect`` says so.
    """
    return select_model(path, module=module, layer=layer, direction=direction, cell=cell,
                        rename=rename).s0

