"""Lyapunov spectra of the driven state dynamics s_t = F(s_{t−1}, x_t), exact Jacobians.

The algorithm is a contract (so that results are deterministic and comparable):

* the tangent space of the full state s is ordered as the cell declares its blocks (h, then
  c for the LSTM; ``h_l0, c_l0, h_l1, …`` for stacks); its dimension is N;
* Q₀ = the first K columns of the N × N identity (K = N by default);
* for t = 1..T: Z = J_t Q_{t−1}, then Q_t R_t = qr(Z) with the diagonal of R_t made
  positive; for t > T0 (the transient), log R_t[i, i] is accumulated;
* λ_i = that sum / (T − T0): natural log per step, in descending order.

J_t Q is applied through the derived structure (forward mode), the way the backward sweep
applies G J_t: for each sink of the step, in evaluation order,

    T[sink] = Σ_(source, coef) coef ⊙ T[source],   T[W v] = W · T[v],

with T[s_prev] the rows of Q for block s. No dense N × N Jacobian is ever formed, and the
coefficients are the very ones the sweep uses (:meth:`Bound.coefficients`).

A zero pivot (a direction the step annihilates, e.g. the LSTM's h when every weight is 0)
gives log 0 = −inf: that exponent is −inf, and so is reported.

For a cell diagonal per unit (``Compiled.diagonal``) the same algorithm splits into n
independent S × S ones, one per unit (:func:`_per_unit`): time-averaged log|a_t| for one
state block, no N × N QR at all (``LyapunovResult.meta["path"]``: ``"diagonal"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gateflow._errors import GateflowError
from gateflow._interrupt import check as check_interrupt
from gateflow._memory import check_fits
from gateflow._validate import real_array, shown, whole
from gateflow.cells._record import Cell
from gateflow.numeric import _diagonal
from gateflow.numeric._compile import Group, check_products
from gateflow.numeric._prepare import prepare

__all__ = ["LyapunovResult", "kaplan_yorke", "lyapunov"]

#: How many running estimates are kept (every T/RUNNING steps) and of how many exponents.
RUNNING, RUNNING_EXPONENTS = 100, 8


@dataclass
class LyapunovResult:
    """Lyapunov exponents of ``cell`` along the trajectories driven by a batch of inputs.

    ``exponents`` is (B, K): natural log per step, descending per sequence (−inf for a
    direction the dynamics annihilate). ``running`` holds the estimate of the first
    min(K, 8) exponents after ``running_steps[j]`` steps: (len, B, min(K, 8))."""

    cell: Cell
    exponents: np.ndarray
    k: int
    steps: int
    transient: int
    state_dim: int
    blocks: tuple[str, ...]
    running_steps: np.ndarray
    running: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def positive_sum(self) -> np.ndarray:
        """Σ of the positive exponents per sequence (the Kolmogorov–Sinai entropy bound)."""
        lam = np.where(np.isfinite(self.exponents), self.exponents, 0.0)
        return np.sum(np.clip(lam, 0.0, None), axis=1)

    @property
    def kaplan_yorke(self) -> np.ndarray:
        """The Kaplan–Yorke dimension per sequence (:func:`kaplan_yorke`)."""
        return np.array([kaplan_yorke(row) for row in self.exponents])


def kaplan_yorke(exponents) -> float:
    """D_KY = j + (λ_1 + … + λ_j)/|λ_{j+1}|, j the largest index whose partial sum is ≥ 0
    (0 when λ_1 < 0; the number of exponents when every partial sum is ≥ 0, a lower bound
    then: more exponents would be needed)."""
    lam = real_array(exponents, "exponents").astype(np.float64).ravel()
    if lam.size == 0 or np.any(np.isnan(lam)):
        raise GateflowError("exponents must be a non-empty list of numbers (−inf allowed)")
    lam = np.sort(lam)[::-1]
    sums = np.cumsum(lam)
    nonneg = np.nonzero(sums >= 0)[0]
    if nonneg.size == 0:
        return 0.0
    j = int(nonneg[-1]) + 1
    if j >= lam.size:
        return float(j)
    return float(j + sums[j - 1] / abs(lam[j]))


def _plan(comp) -> tuple[list[tuple[str, list[tuple[str, int]]]], dict[str, Group]]:
    """The step's wiring for forward tangents: sinks in evaluation order, each with its
    (source, coefficient index) edges; and product atom -> its group (the products that
    share their argument, applied as one GEMM with the stacked weights)."""
    sinks: dict[str, list[tuple[str, int]]] = {}
    for i, (sink, source) in enumerate(comp.layout):
        sinks.setdefault(sink, []).append((source, i))
    products = {a: g for g in comp.forward if isinstance(g, Group) for a in g.atoms}
    return list(sinks.items()), products


def _scaled(coef, tangent: np.ndarray) -> np.ndarray:
    """diag(coef) · tangent for a (B, n, K) tangent and a (B, n), (n,) or scalar coef."""
    c = np.asarray(coef)
    if c.ndim == 2:
        return c[:, :, None] * tangent
    if c.ndim == 1:
        return c[None, :, None] * tangent
    return c * tangent


def _overflow(Z: np.ndarray, t: int, vals: dict, blocks) -> None:
    """J_t Q is not finite: the state diverged (said by the state check), or the tangents
    overflowed although Q is orthonormal, i.e. one step's Jacobian exceeds the range."""
    if not all(np.all(np.isfinite(vals[b])) for b in blocks):
        return
    raise GateflowError(f"the tangent map J_t Q overflows float64 at step {t}: Q is "
                        "orthonormal, so one step's Jacobian exceeds the range (weights, or "
                        "states such as a huge s0, near the largest float) and its Lyapunov "
                        "exponents would be NaN; rescale them")


def lyapunov(cell: str | Cell, params: dict, x, *, k: int | None = None, transient: int = 0,
             s0: dict | None = None, progress=None) -> LyapunovResult:
    """The K largest Lyapunov exponents of the state dynamics driven by ``x`` (T, B, d), per
    sequence, by the QR algorithm of the module docstring (float64, CPU).

    Args:
        cell, params: the cell and its parameters (as for :func:`gateflow.all_lags`).
        x: inputs (T, B, d), time-major.
        k: how many exponents (default: all, the state dimension N).
        transient: steps T0 whose R factors are not accumulated (the memory of s₀ and Q₀).
        s0: initial state per block (zeros by default).
        progress: called with the step t after each step.
    """
    prep = prepare(cell, params, x, s0)  # NumPy, float64
    cell, dims, s0, T, B = prep.cell, prep.dims, prep.s0, prep.T, prep.B
    n, d = prep.sizes["n"], prep.d
    xh = prep.x
    N = sum(dims.values())
    k = N if k is None else whole(k, "k (number of exponents)", 1, N)
    transient = whole(transient, "transient", 0, T - 1)
    if progress is not None and not callable(progress):
        raise GateflowError(f"progress must be a function of the step t, or None; "
                            f"got {shown(progress)}")
    check_fits(8 * (4 * B * N * k + T * B * d + 4 * B * n * len(cell.equations) * k),
               "this Lyapunov spectrum")
    if not np.all(np.isfinite(xh)):
        raise GateflowError("inputs contain NaN or Inf; clean them before analysis")

    comp, bound = prep.compiled, prep.bound
    if comp.diagonal:  # the structure's verdict: per unit, S × S (gateflow.numeric._diagonal)
        return _per_unit(prep, k, transient, progress)
    sinks, products = _plan(comp)
    blocks = tuple(cell.state)
    Q = np.zeros((B, N, k))
    Q[:, np.arange(k), np.arange(k)] = 1.0  # the first K columns of the identity
    state = {b: np.zeros((B, dims[b])) if s0 is None or b not in s0 else
             np.broadcast_to(s0[b], (B, dims[b])).astype(np.float64) for b in blocks}
    first = np.cumsum([0, *(dims[b] for b in blocks)])  # each block's rows in Q
    total = np.zeros((B, k))
    every = max(1, (T - transient) // RUNNING)
    run_steps, run_vals = [], []
    m = min(k, RUNNING_EXPONENTS)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for t in range(1, T + 1):
            check_interrupt()
            vals = bound.step(xh[t - 1], state)
            check_products(bound, vals, t)
            coefs = bound.coefficients(vals)
            tan: dict[str, np.ndarray] = {f"{b}_prev": Q[:, first[j]:first[j + 1]]
                                          for j, b in enumerate(blocks)}

            def source(name: str) -> np.ndarray:
                if name not in tan:  # a product W v of a state-dependent v: its whole
                    g = products[name]  # group [W_1; …; W_G] v as one GEMM
                    stacked = np.matmul(bound.stacked[g.atoms][0], source(g.arg))
                    off = bound.offsets[g.atoms]
                    for j, atom in enumerate(g.atoms):
                        tan[atom] = stacked[:, off[j]:off[j + 1]]
                return tan[name]

            for sink, edges in sinks:
                acc = None
                for src, i in edges:
                    term = _scaled(coefs[i], source(src))
                    acc = term if acc is None else acc + term
                tan[sink] = acc if acc is not None else np.zeros(
                    (B, bound.sizes[cell.node_sizes.get(sink, "n")], k))
            Z = np.concatenate([tan.get(b, np.zeros((B, dims[b], k))) for b in blocks], axis=1)
            if not np.all(np.isfinite(Z)):
                _overflow(Z, t, vals, blocks)
            Q, R = np.linalg.qr(Z)
            diag = np.diagonal(R, axis1=1, axis2=2)
            sign = np.where(diag < 0, -1.0, 1.0)
            Q = Q * sign[:, None, :]
            if t > transient:
                total += np.log(np.abs(diag))
                if (t - transient) % every == 0 or t == T:
                    run_steps.append(t)
                    now = np.sort(total / (t - transient), axis=1)[:, ::-1]
                    run_vals.append(now[:, :m])  # the m largest so far, like the result
            state = {b: vals[b] for b in blocks}
            if not all(np.all(np.isfinite(v)) for v in state.values()):
                raise GateflowError(f"the forward pass diverged at step {t}: the state is not "
                                    "finite, so its Lyapunov exponents are undefined")
            if progress is not None:
                progress(t)
    return _result(cell, total, k, T, transient, N, blocks, run_steps, run_vals, m,
                   {"n": n, "d": d, "T": T, "B": B, "path": "dense"})


def _result(cell: Cell, total: np.ndarray, k: int, T: int, transient: int, N: int,
            blocks: tuple[str, ...], run_steps: list, run_vals: list, m: int,
            meta: dict) -> LyapunovResult:
    """The exponents from the accumulated log|R_jj| (B, K), sorted, with the running
    estimates."""
    B = total.shape[0]
    lam = total / (T - transient)
    if np.any(np.isnan(lam)):  # cannot happen after the checks above; never returned
        raise GateflowError("a Lyapunov exponent came out NaN (the QR of J_t Q failed); "
                            "rescale the weights or the inputs")
    order = np.argsort(-np.where(np.isnan(lam), -np.inf, lam), axis=1, kind="stable")
    lam = np.take_along_axis(lam, order, axis=1)
    return LyapunovResult(
        cell=cell, exponents=lam, k=k, steps=T, transient=transient, state_dim=N,
        blocks=blocks, running_steps=np.asarray(run_steps, dtype=int),
        running=np.asarray(run_vals).reshape(len(run_steps), B, m), meta=meta)


def _unit_jacobians(sinks, coefs: list, rows: int, n: int, blocks: tuple[str, ...]):
    """Per unit, the S × S Jacobian of each row (sequence and step) of a chunk: (rows, n,
    S, S), from the coefficients by the plan's wiring (forward mode with the unit vectors
    e_Y as tangents: row X, column Y is ∂X_t[u]/∂Y_{t−1}[u])."""
    S = len(blocks)
    eye = np.eye(S)
    tan: dict[str, np.ndarray] = {f"{b}_prev": np.broadcast_to(eye[j], (rows, n, S))
                                  for j, b in enumerate(blocks)}
    for sink, edges in sinks:
        acc = None
        for src, i in edges:
            term = _scaled(coefs[i], tan[src])
            acc = term if acc is None else acc + term
        tan[sink] = acc if acc is not None else np.zeros((rows, n, S))
    return np.stack([np.broadcast_to(tan.get(b, np.zeros((rows, n, S))), (rows, n, S))
                     for b in blocks], axis=2)


def _per_unit(prep, k: int, transient: int, progress) -> LyapunovResult:
    """The QR algorithm of the module docstring for a cell diagonal per unit
    (:attr:`Compiled.diagonal`): the tangent space splits into n invariant S-dimensional
    subspaces, one per unit u (coordinates (Y, u) for the S blocks Y), so the N × N QR is n
    independent S × S ones, the same algorithm on each: Q₀'s first K columns of the
    identity are, for unit u, the first K_u = #{Y: Y·n + u < K} columns of I_S, and
    R_t's diagonal for column (Y, u) is that unit's. With one block (S = 1) the exponents
    are the time averages of log|a_t[u]|, with no QR at all; LRU's rotation-scaling gives
    log|λ_u| twice. No N × N matrix is formed: O(T·B·n·S³). The forward pass runs in
    chunks (:func:`gateflow.numeric._diagonal.chunks`)."""
    cell, T, B = prep.cell, prep.T, prep.B
    comp, bound = prep.compiled, prep.bound
    blocks = tuple(cell.state)
    S, n, d = len(blocks), bound.n, prep.d
    N = S * n
    sinks, _ = _plan(comp)
    forward = _diagonal.Forward(bound)
    length = _diagonal.chunk_length(forward, T, B, n * (len(comp.layout) + 3 * S * S))
    Q = np.broadcast_to(np.eye(S), (B, n, S, S)).copy()  # per unit: rows Y, columns j
    total = np.zeros((B, n, S))  # Σ log R_t[j, j] per unit and column
    every = max(1, (T - transient) // RUNNING)
    run_steps: list[int] = []
    run_vals: list[np.ndarray] = []
    m = min(k, RUNNING_EXPONENTS)

    def columns(acc: np.ndarray) -> np.ndarray:
        """(B, n, S) per unit and column -> (B, K) in the tangent space's order (column
        Y·n + u for block Y, unit u)."""
        return np.swapaxes(acc, 1, 2).reshape(B, N)[:, :k]

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for t0, (coefs,), states in _diagonal.chunks(bound, prep.x, prep.s0_device,
                                                     check_interrupt, length, (comp,)):
            Tc = states[blocks[0]].shape[0]
            J = _unit_jacobians(sinks, coefs, Tc * B, n, blocks).reshape(Tc, B, n, S, S)
            for i in range(Tc):
                t = t0 + i
                if S == 1:  # Q = ±1 per unit: R = |a_t|
                    Z = J[i] * Q
                else:
                    Z = np.matmul(J[i], Q)
                if not np.all(np.isfinite(Z)):
                    _overflow(Z, t, {b: states[b][i] for b in blocks}, blocks)
                if S == 1:
                    diag = Z[..., 0, 0]
                    Q = np.where(diag < 0, -1.0, 1.0)[..., None, None]  # qr([z]) = (1, z)
                else:
                    Q, R = np.linalg.qr(Z)
                    diag = np.diagonal(R, axis1=2, axis2=3)
                    Q = Q * np.where(diag < 0, -1.0, 1.0)[:, :, None, :]
                if t > transient:
                    total += np.log(np.abs(diag)).reshape(B, n, S)
                    if (t - transient) % every == 0 or t == T:
                        run_steps.append(t)
                        now = np.sort(columns(total) / (t - transient), axis=1)[:, ::-1]
                        run_vals.append(now[:, :m])
                if not all(np.all(np.isfinite(states[b][i])) for b in blocks):
                    raise GateflowError(f"the forward pass diverged at step {t}: the state is "
                                        "not finite, so its Lyapunov exponents are undefined")
                if progress is not None:
                    progress(t)
    return _result(cell, columns(total), k, T, transient, N, blocks, run_steps, run_vals, m,
                   {"n": n, "d": d, "T": T, "B": B, "path": "diagonal"})
