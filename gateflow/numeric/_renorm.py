"""Renormalisers: keep the carried rows G of the backward sweep in floating-point range.

:class:`RowScale` (the default) rescales each row on its own and moves the factor into a
per-row log scale, so every row stays exactly a row of the Jacobian up to exp(logscale).
A QR renormaliser (for Lyapunov exponents) would go beside it, implementing the same
:class:`~gateflow.numeric._measure.Renormaliser` protocol with ``row_scales = False``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gateflow.numeric._measure import Context, Step

__all__ = ["RowScale", "renorm_range"]


def renorm_range(dtype) -> tuple[float, float]:
    """Renormalise a row when its squared norm leaves this range: [tiny^¼, max^¼], about
    1e±77 in float64 and 1e±9.5 in float32, far from under- and overflow in both."""
    info = np.finfo(dtype)
    return float(info.tiny) ** 0.25, float(info.max) ** 0.25


class RowScale:
    """Per-row log-space scaling: when a row's squared norm (over all state blocks) leaves
    :func:`renorm_range`, the row is divided by its norm and log(norm) is added to its log
    scale. Rows only: a row's numbers never depend on the others'."""

    row_scales = True

    def init(self, ctx: Context, rows: int) -> None:
        self.ctx = ctx
        self.lo, self.hi = renorm_range(ctx.dtype)
        self._logscale = ctx.xp.zeros((ctx.B, rows), dtype=np.float64)

    @property
    def logscale(self) -> Any:
        return self._logscale

    def renormalise(self, step: Step) -> None:
        xp, ctx = self.ctx.xp, self.ctx
        total = sum(step.sq(s) for s in ctx.state)
        drift = (total > self.hi) | ((total < self.lo) & (total > 0))
        if bool(xp.any(drift)):
            scale = xp.where(drift, xp.sqrt(total), 1.0)
            self._logscale += xp.log(scale)
            inv = (1.0 / scale).astype(ctx.dtype)[..., None]
            for s in ctx.state:
                step.G[s] *= inv
