"""The records the jobs hand to presentation, typed, in the layer presentation may import.

* :class:`Run`: one configuration of ``gateflow report`` (a cell, the block it shows, its
  memory-gate initialisation);
* :class:`Measured`: that run measured, its :class:`~gateflow.ChainResult` (numeric), its
  fits (:class:`~gateflow.analysis._analysis.ChainFits`) and Lyapunov exponents.

A ``gateflow decay`` result is a :class:`~gateflow.ChainResult` itself (with its
:class:`~gateflow.numeric._result.Provenance`): there is one result type per measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gateflow.analysis._analysis import ChainFits, DecayFit
from gateflow.cells._block import Block
from gateflow.cells._record import Cell
from gateflow.numeric._result import ChainResult

if TYPE_CHECKING:  # the report's Lyapunov spectra: imported when measured, not here
    from gateflow.numeric._lyapunov import LyapunovResult

__all__ = ["Measured", "Run"]


@dataclass(frozen=True)
class Run:
    """One configuration of the report: a cell, the block to show, and its memory-gate
    initialisation (``gate_bias``, or chrono with T_max ``chrono``)."""

    label: str
    cell: Cell
    block: Block
    group: str  # "cells", "lstm-bias", "gru-bias"
    gate_bias: float | None = None
    chrono: float | None = None
    blocks: tuple[Block, ...] = ()
    spectra: bool = False

    @property
    def state(self) -> str:
        """The state block whose memory the run shows (Y of its block X/Y)."""
        return self.block.wrt


@dataclass
class Measured:
    """One run measured: its ChainResult, parameters, fits (analysis) and wall time."""

    run: Run
    result: ChainResult
    params: dict[str, np.ndarray]
    fits: ChainFits  # the run's blocks and the direct product of its shown block
    seconds: float
    lyapunov: LyapunovResult | None = None  # the leading exponents on the same inputs

    @property
    def fit(self) -> DecayFit:
        """The fit of the block the run shows."""
        return self.fits.blocks[self.run.block]

    @property
    def state(self) -> str:
        return self.run.state

    @property
    def direct_fit(self) -> DecayFit | None:
        """The fit of the shown state's cell-path-only product (None if it has none)."""
        return self.fits.direct.get(self.state)
