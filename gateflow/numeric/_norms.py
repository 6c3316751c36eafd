"""The built-in observers of the backward sweep: the Frobenius and spectral norms (registered
in :mod:`gateflow.numeric._observers`), and the measures that the other arguments of
``all_lags`` ask for: singular values at chosen lags, the direct path and the probe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gateflow.cells._block import Block
from gateflow.numeric._measure import LN10, BlockNorm, Context, Step, logsumexp

__all__ = ["DirectPath", "Frobenius", "Probe", "SingularValues", "Spectral", "spectral_norm"]


class Frobenius(BlockNorm):
    """ln ‖J‖_F, from the rows' squared norms and log scales (one pass over G per step)."""

    name = "frobenius"

    def value(self, step: Step, block: Block):
        r = self.ctx.rows[block.out]
        v = 2 * step.logscale[:, r] + self.ctx.xp.log(step.sq(block.wrt)[:, r])
        return 0.5 * logsumexp(self.ctx.xp, v, 1)

    def diagonal(self, xp, log_abs, values):
        return 0.5 * logsumexp(xp, 2 * log_abs, 1)


class Spectral(BlockNorm):
    """ln ‖J‖₂, the largest singular value, by a subspace iteration warm-started from the
    previous lag's (:func:`spectral_norm`)."""

    name = "spectral"

    def init(self, ctx: Context) -> None:
        super().init(ctx)
        self.warm: dict[str, Any] = {b: None for b in ctx.blocks}

    def value(self, step: Step, block: Block):
        m, safe = step.scaled(block)
        sigma, self.warm[block] = spectral_norm(self.ctx.xp, m, self.warm[block])
        return self.ctx.xp.log(sigma) + safe

    def diagonal(self, xp, log_abs, values):
        return xp.max(log_abs, axis=1)


def spectral_norm(xp, m, V, tol: float = 1e-14, max_iter: int = 50, p: int = 8):
    """Largest singular value of each m[b] (R × n), with a warm start for the next lag.

    Subspace iteration on mᵀm with p vectors and a Rayleigh–Ritz step, warm-started from
    the previous lag's subspace (the top singular directions of ∂s_T/∂s_{T−k} move slowly
    with k). Converges at the rate λ_{p+1}/λ_1, so a cluster of up to p − 1 nearly equal
    top singular values (common: the LSTM's c/c block is dominated by diag(∏ f)) is no
    obstacle. An element is accepted when its top Ritz value θ changes by < tol relatively
    and the Ritz residual ‖mᵀm y − θ y‖ < 1e−7 θ; θ's error is then the square of that,
    i.e. rounding. Elements that do not converge, or whose θ falls below the largest squared
    column norm (a lower bound of ‖m‖₂²: the subspace missed the top direction), fall back
    to a dense eigvalsh."""
    m = m.astype(np.float64)  # in float32 the tolerances below could never be met
    B, _, n = m.shape
    p = min(p, n)
    mt = xp.swapaxes(m, 1, 2)
    if V is None:  # the same start for every sequence: results do not depend on the batch
        rng = np.random.default_rng(0)
        V = xp.broadcast_to(xp.asarray(rng.standard_normal((n, p)), dtype=m.dtype), (B, n, p))
    theta = xp.full(B, -1.0)
    done = xp.zeros(B, dtype=bool)
    V_out = V
    for _ in range(max_iter):
        Q, _r = xp.linalg.qr(V)
        MV = xp.matmul(m, Q)  # (B, R, p)
        H = xp.matmul(xp.swapaxes(MV, 1, 2), MV)  # Qᵀ mᵀm Q, (B, p, p)
        lam, Y = xp.linalg.eigh(H.astype(np.float64))
        top = lam[:, -1]
        W = xp.matmul(mt, MV)  # mᵀm Q
        y = Y[:, :, -1:].astype(m.dtype)
        resid = xp.linalg.norm((xp.matmul(W, y) - top[:, None, None].astype(m.dtype)
                                * xp.matmul(Q, y))[..., 0], axis=1)
        now = ((xp.abs(top - theta) <= tol * xp.abs(top)) & (resid <= 1e-7 * xp.abs(top))) \
            | (top <= 0)
        # A converged sequence is frozen (θ and its subspace), so its numbers never depend
        # on how long the others in the batch take.
        theta = xp.where(done, theta, top)
        V_out = xp.where(done[:, None, None], V_out, Q)
        done = done | now
        if bool(xp.all(done)):
            break
        V = xp.where(done[:, None, None], V, W)
    # A certified lower bound: ‖m‖₂² ≥ the largest squared column norm. A subspace that
    # misses the top direction entirely converges, residual and all, to a smaller singular
    # value (a diagonal block whose largest entry moves to a unit outside the subspace: the
    # new top direction is exactly orthogonal to it). Below the bound, the element is
    # computed densely, and its warm start gains the largest column's direction so that the
    # next lag's iteration sees it.
    col = xp.einsum("brn,brn->bn", m, m)  # (B, n) squared column norms, no temporary
    bound = xp.max(col, axis=1)
    missed = done & (theta < bound * (1 - 1e-9))
    if bool(xp.any(missed)):
        j = xp.argmax(col, axis=1)
        e = xp.zeros((B, n), dtype=V_out.dtype)
        e[xp.arange(B), j] = 1
        V_out = xp.where(missed[:, None, None], xp.concatenate([V_out[:, :, :-1], e[:, :, None]],
                                                                axis=2), V_out)
        done = done & ~missed
    if not bool(xp.all(done)):
        bad = xp.nonzero(~done)[0]
        sub = m[bad].astype(np.float64)
        theta[bad] = xp.linalg.eigvalsh(xp.swapaxes(sub, 1, 2) @ sub)[:, -1]
    return xp.sqrt(xp.maximum(theta, 0)), V_out


class SingularValues:
    """Every singular value of each block at the chosen lags, log10, descending.

    ``finish()``: lag -> block -> (B, min(r, n)) (batch first)."""

    batch_axis = 0

    def __init__(self, lags: Sequence[int]):
        self.lags = frozenset(lags)

    def init(self, ctx: Context) -> None:
        self.ctx = ctx
        self.out: dict[int, dict[str, Any]] = {}

    def observe(self, step: Step) -> None:
        if step.k not in self.lags:
            return
        xp = self.ctx.xp
        for b in self.ctx.blocks:
            m, safe = step.scaled(b)
            sv = xp.linalg.svd(m.astype(np.float64), compute_uv=False)
            self.out.setdefault(step.k, {})[b] = (xp.log(sv) + safe[:, None]) / LN10

    def finish(self) -> dict[int, dict[str, np.ndarray]]:
        host = self.ctx.backend.to_host
        return {k: {b: host(v) for b, v in per.items()} for k, per in self.out.items()}


class DirectPath:
    """The direct path of each state block that has one: ∏_{t} diag(c_t), c_t its direct
    coefficient in ∂s_t/∂s_{t−1} (the LSTM's c: ∏ f), in log space.

    Measured by every given norm that has a diagonal form (:meth:`BlockNorm.diagonal`),
    in their order; ``finish()``: state block -> JSON key -> (T, B)."""

    batch_axis = 1

    def __init__(self, norms: Sequence[tuple[str, str, BlockNorm]]):
        self.norms = tuple(norms)  # (name, key, an instance used for its diagonal form)

    def init(self, ctx: Context) -> None:
        self.ctx = ctx
        xp = ctx.xp
        self.log_abs = {s: xp.zeros((ctx.B, ctx.size(s)), dtype=np.float64) for s in ctx.direct}
        self.out: dict[str, dict[str, Any]] = {s: {} for s in ctx.direct}

    def observe(self, step: Step) -> None:
        xp, B = self.ctx.xp, self.ctx.B
        for s, j in self.ctx.direct.items():
            c = xp.broadcast_to(xp.asarray(step.coefs[j], dtype=np.float64),
                                (B, self.ctx.size(s)))
            self.log_abs[s] += xp.log(xp.abs(c))
            values: dict[str, Any] = {}
            for name, key, norm in self.norms:
                v = values[name] = norm.diagonal(xp, self.log_abs[s], values)
                if v is None:
                    continue
                out = self.out[s]
                if key not in out:
                    out[key] = xp.empty((self.ctx.T, B))
                out[key][step.k - 1] = norm.record(v)

    def finish(self) -> dict[str, dict[str, np.ndarray]]:
        host = self.ctx.backend.to_host
        return {s: {k: host(v) for k, v in dd.items()} for s, dd in self.out.items()}


class Probe:
    """log10 ‖∂⟨v, s_T⟩/∂s_{T−k}‖₂, the gradient a loss ⟨v, s_T⟩ would see: the probe row
    of G over all state blocks. ``finish()``: (T, B)."""

    batch_axis = 1

    def init(self, ctx: Context) -> None:
        self.ctx = ctx
        self.out = ctx.xp.empty((ctx.T, ctx.B))

    def observe(self, step: Step) -> None:
        row = self.ctx.probe_row
        total = sum(step.sq(s)[:, row] for s in self.ctx.state)
        self.out[step.k - 1] = (0.5 * self.ctx.xp.log(total) + step.logscale[:, row]) / LN10

    def finish(self) -> np.ndarray:
        return self.ctx.backend.to_host(self.out)
