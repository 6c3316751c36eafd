"""Which theory applies to which measurement: the one rule every figure, table and report uses.

Gateflow compares a measured memory block with three pieces of theory
(:mod:`gateflow.analysis._analysis` computes them):

* the **mean-field** rate √n χ₁^{k/2} of a random tanh RNN (Poole et al. 2016): an Elman
  cell h = tanh(W x + U h + b) with i.i.d. weights;
* the **Pascanu bound** √n (γ‖U‖₂)^k (Pascanu, Mikolov & Bengio 2013): an Elman cell
  h = φ(W x + U h + b) with |φ'| ≤ γ; γ = 1 for tanh and ReLU;
* the **memory gate's path** σ(b)^k (× √n): a cell whose memory passes through a gate with
  bias b (the LSTM's forget gate b_f, the GRU's update gate b_z; :attr:`Cell.memory_bias`),
  exact when every weight is zero.

The rule reads the cell's equations (:func:`theory_for`), never its name: a variant with the
same equations gets the same theory, a stack or another cell none it does not satisfy.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateflow.cells._library import RNN, RNN_RELU
from gateflow.cells._record import Cell
from gateflow.numeric._result import ChainResult

__all__ = ["Theory", "theory_for", "theory_of_cell"]


@dataclass(frozen=True)
class Theory:
    """The theory that applies to one cell's memory block.

    mean_field: the mean-field rate of a random tanh RNN applies (an Elman tanh cell; the
    caller checks that its weights are i.i.d.); pascanu_gamma: γ = sup|φ'| of the Pascanu
    bound (γ‖U‖₂)^k, or None when the cell is not h = φ(W x + U h + b); gate: the bias
    parameter of the memory gate (``"b_f"``, ``"b_z"``) whose zero-weight path σ(b)^k
    applies, or None."""

    mean_field: bool = False
    pascanu_gamma: float | None = None
    gate: str | None = None

    @property
    def elman(self) -> bool:
        """h = φ(W x + U h + b): the mean-field and Pascanu lines are about this cell."""
        return self.pascanu_gamma is not None


def _same_equations(cell: Cell, other: Cell) -> bool:
    return (cell.state, cell.params, cell.equations) == (other.state, other.params,
                                                         other.equations)


def theory_of_cell(cell: Cell) -> Theory:
    """:func:`theory_for` of a measurement of ``cell``."""
    tanh, relu = _same_equations(cell, RNN), _same_equations(cell, RNN_RELU)
    return Theory(mean_field=tanh, pascanu_gamma=1.0 if tanh or relu else None,
                  gate=None if cell.memory_bias is None else cell.memory_bias[0])


def theory_for(result: ChainResult) -> Theory:
    """Which theory lines apply to ``result``'s memory block (see the module docstring)."""
    return theory_of_cell(result.cell)
