"""What a measurement of gradient flow gives back: :class:`ChainResult`, the one result type.

:func:`gateflow.all_lags` returns it; :func:`gateflow.decay` returns the same type with its
:class:`Provenance` filled in (the seed, where the weights and the inputs came from), as the
decay JSON records it (:mod:`gateflow.jobs._contract`, which also reads a saved result
back into a ChainResult). A result carries its :class:`~gateflow.Cell` (a stacked cell
included), never a name to look up, and is keyed by :class:`.Block`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from gateflow.cells._block import Block
from gateflow.cells._record import Cell
from gateflow.numeric._observers import OBSERVERS

__all__ = ["DIRECT_SUFFIX", "ChainResult", "Provenance"]

#: How a direct product is named beside the blocks (CSV rows, tables): ``"c|direct"``.
DIRECT_SUFFIX = "|direct"


def _array_source() -> dict[str, object]:
    return {"source": "array"}


@dataclass(frozen=True)
class Provenance:
    """Where a result's numbers came from, as the decay JSON records it.

    ``seed``: the seed of generated weights or inputs (None: none generated); ``weights``
    and ``inputs``: how each was obtained, ``{"source": "array"}`` for arrays passed in,
    ``{"source": "init", ...config}`` for generated ones, ``{"source": "file", "path",
    "sha256"}`` for files (the JSON's ``"weights"`` and ``"input_data"``)."""

    seed: int | None = None
    weights: Mapping[str, object] = field(default_factory=_array_source)
    inputs: Mapping[str, object] = field(default_factory=_array_source)


@dataclass
class ChainResult:
    """Norms of ∂X_T/∂Y_{T−k}; arrays are (T, B): index k−1 is lag k, then the batch.

    ``blocks`` and ``direct`` are keyed by each norm's ``Observer.key`` (see
    ``gateflow.numeric._observers``): ``log10_…`` keys hold log10 norms, where
    ``-inf`` marks an exactly zero Jacobian (e.g. an RNN with U = 0); other keys (such as
    ``stable_rank``) hold plain values. ``direct`` holds the norms asked for that have a
    diagonal form, and always the Frobenius and spectral norms (``DEFAULT_NORMS``).
    ``norms`` names the norms measured (``all_lags(norms=…)``), ``provenance`` where the
    weights and inputs came from (:func:`gateflow.decay` fills it in)."""

    cell: Cell
    lags: np.ndarray
    blocks: dict[Block, dict[str, np.ndarray]]  # "c/c" -> {"log10_frobenius": (T, B), ...}
    direct: dict[str, dict[str, np.ndarray]]  # "c" -> norms of ∏ diag(direct coef) (LSTM: ∏ f)
    #: lag -> block -> (B, n) log10 singular values, for the lags asked for
    singular_values: dict[int, dict[Block, np.ndarray]] = field(default_factory=dict)
    probe: np.ndarray | None = None  # (T, B) log10 ‖∂⟨v, s_T⟩/∂s_{T−k}‖₂
    states: dict[str, np.ndarray] | None = None  # s_0..s_T per block, (T+1, B, n)
    #: Sizes, T, B, and ``"path"``: ``"diagonal"`` when the cell's state Jacobian is
    #: diagonal per unit and the sweep ran elementwise, else ``"dense"``.
    meta: dict = field(default_factory=dict)
    #: Input sensitivity: "h/x" -> norms of ∂h_T/∂x_{T−k}, (T, B), index k = input lag k
    #: (0..T−1, :attr:`input_lags`), keyed like :attr:`blocks`. Empty unless asked for.
    #: A stack's output-gradient blocks "h_l1/y_l0" (∂h⁽¹⁾_T/∂y⁽⁰⁾_{T−k}, what a hook on
    #: layer 0's output sees) sit here too, at the same lags.
    inputs: dict[Block, dict[str, np.ndarray]] = field(default_factory=dict)
    #: The registered norms measured (names, as ``all_lags(norms=…)`` took them).
    norms: tuple[str, ...] = ()
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def input_lags(self) -> np.ndarray:
        """The input lags 0..T−1 (x_T, the last input, is lag 0)."""
        return self.lags - 1

    @property
    def shapes(self) -> dict[str, int]:
        """T, B, n, d, and a cell's other sizes (the projected LSTM's p)."""
        m = self.meta
        other = {k: int(v) for k, v in m.get("sizes", {}).items() if k not in ("n", "d")}
        return {"T": int(m["T"]), "B": int(m["B"]), "n": int(m["n"]), "d": int(m["d"]), **other}

    def groups(self) -> list[tuple[str, dict[str, np.ndarray], int]]:
        """(name, norms by key, first lag) of every block, input block and direct product
        (named ``"<s>|direct"``, ``DIRECT_SUFFIX``), in file order."""
        return [*((b, dd, 1) for b, dd in self.blocks.items()),
                *((b, dd, 0) for b, dd in self.inputs.items()),
                *((s + DIRECT_SUFFIX, dd, 1) for s, dd in self.direct.items())]

    def series(self) -> Iterator[tuple[str, str, np.ndarray]]:
        """(name, norm, (T, B) array) for every block, input block, then every direct
        product (named ``"<s>|direct"``), for each norm measured."""
        for name, dd, _ in self.groups():
            for nm in self.norms:
                if OBSERVERS[nm].key in dd:  # a direct product has only the diagonal norms
                    yield name, nm, np.asarray(dd[OBSERVERS[nm].key])
