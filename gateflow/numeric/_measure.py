"""The observer protocol of the backward sweep: what a measurement sees and must provide.

The sweep (:mod:`gateflow.numeric._chain`) holds, per state block Y, the rows
G[Y] = ∂(rows of s_T)/∂Y_{T−k}, shape (B, R, n), and walks k = 1..T. It knows no norm:
every quantity it records is a :class:`Measure`, driven in three calls:

* ``init(ctx)``: once, with the run's :class:`Context` (backend, dtype, shapes, blocks and
  which rows of G belong to which output block); allocate the (T, B) outputs here;
* ``observe(step)``: once per lag k, with the :class:`Step` (G, the rows' log scales, the
  step's Jacobian coefficients, and memoised derived quantities shared by all measures);
* ``finish()``: host (NumPy) arrays, in whatever nesting the measure documents; the batch
  axis is ``batch_axis`` (the sweep concatenates the batch slices of worker threads).

Per-block scalar norms derive from :class:`BlockNorm`; they are registered by name in
:mod:`gateflow.numeric._observers` (an :class:`Observer` record: name, JSON key, label,
help line, the measure class, what it requires). Between steps a :class:`Renormaliser`
keeps G in range (:mod:`gateflow.numeric._renorm`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from gateflow.cells._block import Block
from gateflow.numeric._backend import Backend

__all__ = ["LN10", "BlockNorm", "Context", "Measure", "Observer", "Renormaliser", "Step",
           "logsumexp"]

LN10 = math.log(10.0)


def logsumexp(xp, v, axis: int):
    """log Σ exp(v) along ``axis``, exact zeros (all −inf) giving −inf."""
    m = xp.max(v, axis=axis, keepdims=True)
    safe = xp.where(xp.isfinite(m), m, 0)
    out = xp.log(xp.sum(xp.exp(v - safe), axis=axis)) + xp.squeeze(safe, axis=axis)
    return xp.where(xp.squeeze(m, axis=axis) == -xp.inf, -xp.inf, out)


@dataclass(frozen=True)
class Context:
    """What every measure is told once, before the sweep.

    Attributes:
        backend: the array backend record (``backend.xp``, ``backend.to_host``).
        dtype: the dtype of G (float64 or float32); outputs are float64.
        T, B, n: steps, sequences in this batch slice, units per state block.
        state: the state blocks, in the cell's order (the keys of ``Step.G``).
        blocks: the blocks X/Y asked for (∂X_T/∂Y_{T−k}), as :class:`.Block` s.
        rows: output block X -> its rows of G (a slice of the R rows).
        probe_row: the row holding the probe ⟨v, s_T⟩, or None.
        direct: state block -> index of its direct-path coefficient in ``Step.coefs``.
        dims: units of each block of ``state`` (n for every block unless the cell says
            otherwise: a projected LSTM's h has p).
    """

    backend: Backend
    dtype: np.dtype
    T: int
    B: int
    n: int
    state: tuple[str, ...]
    blocks: tuple[Block, ...]
    rows: Mapping[str, slice]
    probe_row: int | None = None
    direct: Mapping[str, int] = field(default_factory=dict)
    dims: Mapping[str, int] = field(default_factory=dict)

    def size(self, s: str) -> int:
        """Units of state block ``s``."""
        return self.dims.get(s, self.n)

    @property
    def xp(self):
        return self.backend.xp


class Step:
    """One lag k of the sweep, as the measures see it.

    Attributes:
        k: the lag (1..T).
        G: state block Y -> (B, R, n) rows of ∂(outputs)_T/∂Y_{T−k}, up to the row scales.
        logscale: (B, R) float64 natural-log scale of each row (the row of the Jacobian is
            exp(logscale) · G), from the :class:`Renormaliser`.
        coefs: this step's Jacobian coefficients (the compiled layout), e.g. for the
            direct path.
        values: name -> block -> (B,) value published by the block norms already observed
            this step (natural log for log norms), for the norms that build on them.

    Derived quantities are computed once per step, whoever asks first (:meth:`sq`,
    :meth:`scaled`).
    """

    def __init__(self, ctx: Context, k: int, G: dict, logscale, coefs: list):
        self.ctx, self.k, self.G, self.logscale, self.coefs = ctx, k, G, logscale, coefs
        self.values: dict[str, dict[str, Any]] = {}
        self._sq: dict[str, Any] = {}
        self._scaled: dict[str, tuple[Any, Any]] = {}

    def sq(self, s: str):
        """(B, R) float64 squared norm of every row of G[s] (without the row scales)."""
        if s not in self._sq:
            a = self.G[s]
            self._sq[s] = self.ctx.xp.einsum("brj,brj->br", a, a).astype(np.float64)
        return self._sq[s]

    def block(self, b: Block):
        """Block X/Y -> (G rows (B, r, n), their log scales (B, r))."""
        r = self.ctx.rows[b.out]
        return self.G[b.wrt][:, r, :], self.logscale[:, r]

    def scaled(self, b: Block):
        """``"X/Y"`` -> (m, safe): the block ∂X_T/∂Y_{T−k} = e^safe · m, m (B, r, n) in the
        sweep's dtype with its largest row scale divided out, safe (B,) float64 (0 where
        the block is exactly zero)."""
        if b not in self._scaled:
            xp = self.ctx.xp
            g, ls = self.block(b)
            top = xp.max(ls, axis=1)
            safe = xp.where(xp.isfinite(top), top, 0)
            m = g * xp.exp(ls - safe[:, None])[..., None].astype(self.ctx.dtype)
            self._scaled[b] = (m, safe)
        return self._scaled[b]


class Measure(Protocol):
    """A measurement made along the sweep (see the module docstring)."""

    #: Axis of the batch in every array ``finish`` returns.
    batch_axis: int

    def init(self, ctx: Context) -> None: ...

    def observe(self, step: Step) -> None: ...

    def finish(self) -> Any: ...


class BlockNorm:
    """A scalar per block, sequence and lag: (T, B) float64 per ``"X/Y"`` block.

    Subclasses set ``name`` (their registry name, under which each step's value is
    published in ``Step.values``) and ``log10`` (True: :meth:`value` is a natural log and
    the recorded number its log10; False: recorded as is), and implement :meth:`value`;
    :meth:`diagonal` (the same quantity for a diagonal matrix, from its log|entries|)
    makes the norm available for the direct path ∏ diag(coef).
    """

    name: ClassVar[str]
    log10: ClassVar[bool] = True
    batch_axis = 1

    def init(self, ctx: Context) -> None:
        self.ctx = ctx
        self.out = {b: ctx.xp.empty((ctx.T, ctx.B), dtype=np.float64) for b in ctx.blocks}

    def value(self, step: Step, block: Block):
        """(B,) value for ``block`` at this step: natural log if ``log10``, else plain."""
        raise NotImplementedError

    def diagonal(self, xp, log_abs: Any, values: dict[str, Any]) -> Any:
        """(B,) value for diag(d) from log|d| (B, n); ``values`` holds the diagonal values
        of the norms before this one (by name). None: not defined for the direct path."""
        return None

    def record(self, v):
        """The number stored for value ``v``: its log10 for a log norm."""
        return v / LN10 if self.log10 else v

    def observe(self, step: Step) -> None:
        mine = step.values.setdefault(self.name, {})
        for b in self.ctx.blocks:
            v = mine[b] = self.value(step, b)
            self.out[b][step.k - 1] = self.record(v)

    def finish(self) -> dict[str, np.ndarray]:
        return {b: self.ctx.backend.to_host(v) for b, v in self.out.items()}


@dataclass(frozen=True)
class Observer:
    """One registered per-lag norm of a Jacobian block (see ``gateflow.numeric._observers``).

    Attributes:
        name: the CLI choice (``--norms frobenius``) and registry key.
        key: its JSON key and CSV column (``"log10_frobenius"``); a key without the
            ``log10_`` prefix holds plain values (``"stable_rank"``).
        label: mathtext for figures, with ``{J}`` standing for the block, e.g.
            ``r"\\|{J}\\|_F"``.
        description: one line for ``--help``, including what it costs.
        measure: the ``BlockNorm`` subclass that computes it (a fresh instance per
            run and batch slice; the sweep's side, not needed by readers of results).
        requires: names of the norms whose per-step values it builds on (computed too,
            reported only if asked for).
        log10: True if the recorded values are log10 (of a norm), False if plain.
    """

    name: str
    key: str
    label: str
    description: str
    measure: Callable[[], BlockNorm]
    requires: tuple[str, ...] = ()
    log10: bool = True


class Renormaliser(Protocol):
    """Keeps the carried rows G in floating-point range between steps.

    ``init`` returns the initial (B, R) float64 log scales (zeros); after the measures have
    observed a step, ``renormalise(step)`` may rescale ``step.G`` in place and updates
    the log scales it returns from :attr:`logscale`. ``row_scales`` says whether the
    Jacobian's rows are exp(logscale) · G (per-row scaling); a renormaliser that mixes
    rows (QR, for Lyapunov exponents) sets it False, exposes what it accumulates (e.g.
    log|diag R| per step) as attributes for its own measures, and the sweep refuses the
    block norms with it.
    """

    row_scales: bool

    def init(self, ctx: Context, rows: int) -> Any: ...

    @property
    def logscale(self) -> Any: ...

    def renormalise(self, step: Step) -> None: ...
