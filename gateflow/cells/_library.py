"""Every cell gateflow knows, declared once, as equations. Nothing here is differentiated by hand.

Letters follow the papers and PyTorch: LSTM gates i (input), f (forget), g (candidate),
o (output), cell state c, hidden state h; GRU gates r (reset), z (update), n (candidate).
Matrices applied to x are W_*, matrices applied to a state are U_*, biases b_*, peepholes p_*;
the projected LSTM's projection (PyTorch ``weight_hr``) is P, and its h has p units.
See :mod:`gateflow.cells._record` for the syntax.

.. warning:: Two GRUs share the name. PyTorch ``nn.GRU``, cuDNN, Keras ``reset_after=True``
   and ONNX ``linear_before_reset=1`` apply the reset gate *after* the recurrent matmul,
   n = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn)): cell ``gru``. Cho et al. (2014) and Keras
   ``reset_after=False`` apply it *before*, n = tanh(W_n x + b_in + U_n (r ⊙ h) + b_hn):
   cell ``gru-cho``. The same weights give different functions and different Jacobians;
   pick the cell that matches the framework the weights come from.
"""

from __future__ import annotations

from gateflow._errors import GateflowError
from gateflow._validate import choose, items_of, shown
from gateflow.cells._activations import (
    FAMILIES,
    activation_text,
    parse_name,
    rewrite_equations,
    split_top,
)
from gateflow.cells._record import Cell

_LSTM_GATES = (
    "i = sigmoid(W_i @ x + U_i @ h_prev + b_i)",
    "f = sigmoid(W_f @ x + U_f @ h_prev + b_f)",
    "g = tanh(W_g @ x + U_g @ h_prev + b_g)",
    "o = sigmoid(W_o @ x + U_o @ h_prev + b_o)",
)
_LSTM_PARAMS = tuple(f"{m}_{k}" for m in "WUb" for k in "ifgo")
_GRU_GATES = (
    "r = sigmoid(W_r @ x + U_r @ h_prev + b_r)",
    "z = sigmoid(W_z @ x + U_z @ h_prev + b_z)",
)
_GRU_PARAMS = ("W_r", "W_z", "W_n", "U_r", "U_z", "U_n", "b_r", "b_z", "b_in", "b_hn")
_GRU_WARNING = (
    "Two GRUs share the name: PyTorch nn.GRU, cuDNN, Keras reset_after=True and ONNX "
    "linear_before_reset=1 apply the reset gate after the recurrent matmul, "
    "n = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn)) (cell gru); Cho et al. 2014 and Keras "
    "reset_after=False apply it before, n = tanh(W_n x + b_in + U_n (r ⊙ h) + b_hn) "
    "(cell gru-cho). Same weights, different functions, different Jacobians."
)

def _elman(name: str, phi: str, summary: str, reference: str) -> Cell:
    """h = φ(W x + U h + b): PyTorch nn.RNN with ``nonlinearity=phi``."""
    return Cell(
        name=name, summary=summary, reference=reference,
        state=("h",), params=("W", "U", "b"),
        equations=(f"h = {phi}(W @ x + U @ h_prev + b)",),
    )


RNN = _elman("rnn", "tanh", "Elman RNN with tanh (PyTorch nn.RNN)",
             "Elman (1990), Finding structure in time; PyTorch nn.RNN")
RNN_RELU = _elman("rnn-relu", "relu", "Elman RNN with ReLU (PyTorch nn.RNN(nonlinearity='relu'))",
                  "Elman (1990); Le, Jaitly & Hinton (2015), IRNN; PyTorch nn.RNN")
LSTM = Cell(
    name="lstm", summary="LSTM with forget gate, gates i, f, g, o (PyTorch nn.LSTM)",
    reference="Hochreiter & Schmidhuber (1997); Gers, Schmidhuber & Cummins (2000); "
              "PyTorch nn.LSTM",
    state=("h", "c"), params=_LSTM_PARAMS,
    equations=(*_LSTM_GATES, "c = f*c_prev + i*g", "h = o*tanh(c)"),
    memory_bias=("b_f", 1), chrono_partner="b_i",
)
LSTM_PROJ = Cell(
    name="lstm-proj",
    summary="LSTM with a projection: h = P (o ⊙ tanh(c)) has p units, c has n "
            "(PyTorch nn.LSTM(proj_size=p))",
    reference="Sak, Senior & Beaufays (2014), Long short-term memory recurrent neural network "
              "architectures for large scale acoustic modeling; PyTorch nn.LSTM(proj_size)",
    state=("h", "c"), params=(*_LSTM_PARAMS, "P"),
    equations=(*_LSTM_GATES, "c = f*c_prev + i*g", "h = P @ (o*tanh(c))"),
    memory_bias=("b_f", 1), chrono_partner="b_i", sizes=(("h", "p"),),
)
GRU = Cell(
    name="gru", summary="GRU, reset after the matmul, gates r, z, n (PyTorch nn.GRU, cuDNN)",
    reference="Cho et al. (2014) as implemented by cuDNN and PyTorch nn.GRU",
    state=("h",), params=_GRU_PARAMS,
    equations=(*_GRU_GATES, "n = tanh(W_n @ x + b_in + r*(U_n @ h_prev + b_hn))",
               "h = (1 - z)*n + z*h_prev"),
    memory_bias=("b_z", 1), notes=_GRU_WARNING,
)
GRU_CHO = Cell(
    name="gru-cho", summary="GRU of Cho et al. 2014, reset before the matmul: U_n (r ⊙ h)",
    reference="Cho et al. (2014), Learning phrase representations using RNN encoder-decoder",
    state=("h",), params=_GRU_PARAMS,
    equations=(*_GRU_GATES, "n = tanh(W_n @ x + b_in + U_n @ (r*h_prev) + b_hn)",
               "h = (1 - z)*n + z*h_prev"),
    memory_bias=("b_z", 1), notes=_GRU_WARNING,
)
LSTM_PEEPHOLE = Cell(
    name="lstm-peephole",
    summary="LSTM with diagonal peepholes p_i, p_f (on c_{t-1}), p_o (on c_t)",
    reference="Gers & Schmidhuber (2000), Recurrent nets that time and count",
    state=("h", "c"), params=(*_LSTM_PARAMS, "p_i", "p_f", "p_o"),
    equations=(
        "i = sigmoid(W_i @ x + U_i @ h_prev + p_i*c_prev + b_i)",
        "f = sigmoid(W_f @ x + U_f @ h_prev + p_f*c_prev + b_f)",
        "g = tanh(W_g @ x + U_g @ h_prev + b_g)",
        "c = f*c_prev + i*g",
        "o = sigmoid(W_o @ x + U_o @ h_prev + p_o*c + b_o)",
        "h = o*tanh(c)",
    ),
    memory_bias=("b_f", 1), chrono_partner="b_i",
)
LSTM_CIFG = Cell(
    name="lstm-cifg", summary="LSTM with coupled input-forget gate, f = 1 - i",
    reference="Greff et al. (2017), LSTM: A Search Space Odyssey",
    state=("h", "c"), params=tuple(p for p in _LSTM_PARAMS if not p.endswith("_f")),
    equations=(_LSTM_GATES[0], "f = 1 - i", *_LSTM_GATES[2:], "c = f*c_prev + i*g",
               "h = o*tanh(c)"),
    memory_bias=("b_i", -1),
)
MGU = Cell(
    name="mgu",
    summary="Minimal Gated Unit: one forget gate f, candidate n = tanh(W x + U (f ⊙ h))",
    reference="Zhou, Wu, Zhang & Zhou (2016), Minimal gated unit for recurrent neural networks",
    state=("h",), params=("W_f", "U_f", "b_f", "W_n", "U_n", "b_n"),
    equations=(
        "f = sigmoid(W_f @ x + U_f @ h_prev + b_f)",
        "n = tanh(W_n @ x + U_n @ (f*h_prev) + b_n)",
        "h = (1 - f)*h_prev + f*n",
    ),
    memory_bias=("b_f", -1),
)
MINIMALRNN = Cell(
    name="minimalrnn", summary="minimalRNN: z = tanh(W_x x + b_z), u gates h against z",
    reference="Chen, Pennington & Schoenholz (2018), Dynamical isometry and a mean field "
              "theory of RNNs",
    state=("h",), params=("W_x", "b_z", "U_h", "U_z", "b_u"),
    equations=(
        "z = tanh(W_x @ x + b_z)",
        "u = sigmoid(U_h @ h_prev + U_z @ z + b_u)",
        "h = u*h_prev + (1 - u)*z",
    ),
    memory_bias=("b_u", 1),
)
INDRNN = Cell(
    name="indrnn", summary="IndRNN: ReLU with elementwise recurrence u ⊙ h (diagonal Jacobian)",
    reference="Li, Li, Cook, Zhu & Gao (2018), Independently recurrent neural network",
    state=("h",), params=("W", "u", "b"),
    equations=("h = relu(W @ x + u*h_prev + b)",),
)

#: All cells by CLI name, in the order ``gateflow cells`` lists them.
CELLS: dict[str, Cell] = {c.name: c for c in (
    RNN, RNN_RELU, LSTM, GRU, GRU_CHO, LSTM_PEEPHOLE, LSTM_CIFG, LSTM_PROJ, MGU, MINIMALRNN,
    INDRNN)}


#: Cells with declared activations (``lstm[gate=hard_sigmoid(0.2,0.5)]``), by canonical
#: name, made once per process (see :mod:`gateflow.cells._activations`).
VARIANTS: dict[str, Cell] = {}


def _variant(name: str) -> Cell:
    """The cell a name with activations stands for: the declared family's equations with
    the roles' functions replaced (one Cell object per canonical name)."""
    canonical, base, roles = parse_name(name)
    if canonical in CELLS:
        return CELLS[canonical]
    if canonical not in VARIANTS:
        family = CELLS[base]
        said = ", ".join(f"{r} {activation_text(s)} (not {FAMILIES[base][r][0]})"
                         for r, s in roles.items())
        VARIANTS[canonical] = Cell(
            name=canonical, summary=f"{family.summary}, but with {said}",
            reference=family.reference, state=family.state, params=family.params,
            equations=rewrite_equations(family.equations, base, roles),
            memory_bias=family.memory_bias, chrono_partner=family.chrono_partner,
            notes=family.notes, sizes=family.sizes)
    return VARIANTS[canonical]


def get_cell(name: str | Cell) -> Cell:
    """The cell called ``name``: declared, or a declared family with activations
    (``"lstm[gate=hard_sigmoid(0.2,0.5)]"``, see :mod:`gateflow.cells._activations`); a
    :class:`GateflowError` naming the closest declared ones otherwise.

    Called where a name enters gateflow (an argument of the public API, ``--cell``, a
    file's declared cell, a saved result read back: ``read_cell``); everything below
    passes the :class:`Cell` itself. A generated cell (``stack(cell, L)``) is a value, not
    a name to look up: results carry it, and saved results record its equations."""
    if isinstance(name, Cell):
        return name
    if not isinstance(name, str):
        raise GateflowError(f"cell must be a cell name such as 'lstm' or a gateflow Cell, got "
                            f"{shown(name)}; see gateflow.CELLS")
    if name in CELLS:
        return CELLS[name]
    if name in VARIANTS:
        return VARIANTS[name]
    if "[" in name:
        return _variant(name)
    return CELLS[choose(name, CELLS, "cell")]


def cell_names(value, what: str = "cell") -> tuple[str, ...]:
    """Cell names from a comma-separated string (commas inside a variant's brackets do not
    split it: ``"rnn,lstm[gate=hard_sigmoid(0.2,0.5)]"``) or an iterable of names, each
    checked by :func:`get_cell` and given as its canonical name; duplicates dropped."""
    return tuple(dict.fromkeys(get_cell(v).name if isinstance(v, str) else
                               choose(v, CELLS, what)
                               for v in items_of(value, CELLS, what, split=split_top)))


def cells_of(value, what: str = "cell") -> tuple[Cell, ...]:
    """The cells a user asked for, resolved once where the names enter: a comma-separated
    string or an iterable of names (variants included, as :func:`cell_names` reads them)
    and ``Cell`` objects (a stack, a cell declared in a script), duplicates dropped."""
    if isinstance(value, Cell):
        return (value,)
    if not isinstance(value, str) and any(isinstance(v, Cell) for v in value):
        return tuple(dict.fromkeys(v if isinstance(v, Cell) else get_cell(v) for v in value))
    return tuple(get_cell(name) for name in cell_names(value, what))


def read_cell(name: str, record: object = None) -> Cell:
    """The cell a saved result names: rebuilt from its ``record`` (:meth:`Cell.to_record`)
    when the file has one, so that a stack or a cell declared in a script reloads in a
    fresh process; else, for files written before results recorded their cell, the
    declared cell (or variant) called ``name``. A record whose name is not ``name`` is
    refused."""
    if record is None:
        return get_cell(name)
    cell = Cell.from_record(record)
    if cell.name != name:
        raise GateflowError(f"the saved result names the cell {shown(name)} but records the "
                            f"equations of {cell.name!r}")
    declared = CELLS.get(cell.name, VARIANTS.get(cell.name))
    return declared if declared == cell else cell  # the same object as the library's
