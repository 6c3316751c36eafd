"""One backward step of the sweep, G ← G J_t, following a compiled reverse plan (the state
Jacobian's, or the input Jacobian's ∂s_t/∂x_t): the adjoint arithmetic shared by
:mod:`gateflow.numeric._chain` and its pull-backs (:mod:`gateflow.numeric._pullback`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gateflow._errors import GateflowError
from gateflow.numeric._compile import Bound, Compiled, GroupStep, Scatter
from gateflow.numeric._measure import Step

__all__ = ["Sweep", "check_rows"]


class Sweep:
    """One backward step G ← G J_t, following the compiled reverse plan.

    A group of products W_1 v, …, W_G v fed by S sinks is applied in one of two ways, which
    give the same numbers and are chosen by their cost for the number of rows R carried:

    * stacked: scale each sink's adjoint by its coefficients into a (B, R, G·n) buffer, then
      one GEMM with the shared stacked weights (G·n × m): 2·B·R·G·n·m flops;
    * dense: per sequence form K_v = Σ_j diag(coef_j) W_j (n × m), then a batched GEMM per
      sink: 2·B·R·S·n·m flops. For the LSTM (S = 2 sinks c, h; G = 4 weights) this halves
      the work; for the GRU (S = 1, G = 3) it divides it by three.
    """

    def __init__(self, comp: Compiled, bound: Bound, B: int, rows: int):
        """``comp`` gives the reverse plan (the state Jacobian's, or the input Jacobian's:
        the same forward pass, so ``bound``'s stacked weights serve both)."""
        self.comp, self.bound, self.xp = comp, bound, bound.xp
        self.B, self.rows = B, rows
        xp, dt = self.xp, comp.dtype
        #: group atoms -> (A_cat (B, R, Σ n_v), K_cat (B, Σ n_v, m), column offsets, K tmp
        #: per sink size); n_v is the size of sink v (a projected LSTM mixes n and p).
        self.dense: dict = {}
        self.weights: dict = {}
        self._tmp: dict[int, Any] = {}
        for op in comp.reverse:
            if not isinstance(op, GroupStep):
                continue
            g, terms = op.group, op.terms
            w = bound.stacked[g.atoms][0]
            off = bound.offsets[g.atoms]
            m = w.shape[1]
            self.weights[g.atoms] = [w[off[j]:off[j + 1]] for j in range(len(g.atoms))]
            size = [off[pairs[0][0] + 1] - off[pairs[0][0]] for _, pairs in terms]
            n_pairs = sum(len(p) for _, p in terms)
            stacked = 2 * rows * w.shape[0] * m + 20 * rows * max(size) * n_pairs
            dense = 2 * rows * sum(size) * m + 20 * max(size) * m * n_pairs
            if dense < stacked:
                cols = [0, *np.cumsum(size).tolist()]
                self.dense[g.atoms] = (xp.empty((B, rows, cols[-1]), dtype=dt),
                                       xp.empty((B, cols[-1], m), dtype=dt), cols,
                                       {k: xp.empty((B, k, m), dtype=dt) for k in set(size)})

    def tmp(self, a):
        """A scratch array shaped like the adjoint ``a`` (B, R, size)."""
        size = a.shape[-1]
        if size not in self._tmp:
            self._tmp[size] = self.xp.empty(a.shape, dtype=a.dtype)
        return self._tmp[size]

    def backward(self, A: dict, coefs: list) -> dict:
        """Adjoints of every source after one step back; ``A`` holds the new states'."""
        xp, B, rows = self.xp, self.B, self.rows
        adj = dict(A)

        for op in self.comp.reverse:
            if isinstance(op, Scatter):
                a = adj.get(op.sink)
                if a is None:
                    continue
                for src, j in op.sources:
                    if src in adj:
                        adj[src] += xp.multiply(a, _rows(coefs[j]), out=self.tmp(a))
                    else:
                        adj[src] = a * _rows(coefs[j])
                continue
            g, terms = op.group, op.terms
            if not any(v in adj for v, _ in terms):
                continue
            weights = self.weights[g.atoms]
            if g.atoms in self.dense:
                # Σ_v A_v K_v with K_v = Σ_j diag(coef_j) W_j: one batched GEMM, sinks side by side.
                a_cat, k_cat, cols, ktmp = self.dense[g.atoms]
                for i, (v, pairs) in enumerate(terms):
                    span = slice(cols[i], cols[i + 1])
                    if v in adj:
                        a_cat[..., span] = adj[v]
                    else:
                        a_cat[..., span] = 0
                    block = k_cat[:, span, :]
                    for p, (j, kc) in enumerate(pairs):
                        if p == 0:
                            xp.multiply(_cols(coefs[kc]), weights[j], out=block)
                        else:
                            block += xp.multiply(_cols(coefs[kc]), weights[j],
                                                 out=ktmp[cols[i + 1] - cols[i]])
                contrib = xp.matmul(a_cat, k_cat)
            else:
                w = self.bound.stacked[g.atoms][0]
                off = self.bound.offsets[g.atoms]
                buf = xp.zeros((B, rows, w.shape[0]), dtype=self.comp.dtype)
                for v, pairs in terms:
                    if v in adj:
                        for j, kc in pairs:
                            buf[..., off[j]:off[j + 1]] += adj[v] * _rows(coefs[kc])
                contrib = (buf.reshape(B * rows, -1) @ w).reshape(B, rows, -1)
            if g.arg in adj:
                adj[g.arg] += contrib
            else:
                adj[g.arg] = contrib
        return adj


def check_rows(step: Step, what: str) -> None:
    """Refuse a backward step whose rows (on ``what``: the state, or what they are pulled
    back onto) are no longer finite. The rows were renormalised the step before, so only
    weights or states far beyond any trained model's can make G J_t overflow;
    measuring such rows would give inf, NaN or a failed eigensolver instead of a norm."""
    xp, ctx = step.ctx.xp, step.ctx
    total = sum(step.sq(s) for s in ctx.state)
    if bool(xp.all(xp.isfinite(total))):
        return
    big = float(np.finfo(ctx.dtype).max) ** 0.5
    raise GateflowError(
        f"the backward sweep overflows {ctx.dtype} at lag {step.k} (rows on {what}): one "
        f"step's Jacobian is too large to measure (entries near {big:.0e} or above), so the "
        "weights, or the states it is taken at (a huge s0), are out of range; rescale them"
        + (" or use float64" if ctx.dtype == np.float32 else ""))


def _rows(c):
    """A coefficient (B, n), (n,) or scalar, broadcast over the rows of a (B, R, n) adjoint."""
    return c[..., None, :] if getattr(c, "ndim", 0) else c


def _cols(c):
    """A coefficient broadcast as diag(c) W: (B, n, 1), (n, 1) or scalar."""
    return c[..., :, None] if getattr(c, "ndim", 0) else c
