"""The diagonal fast path: the all-lag sweep of a cell whose state Jacobian is diagonal per
unit, elementwise.

When the derivation says so (:func:`gateflow.symbolic._derive.diagonal_per_unit`, carried
as :attr:`Compiled.diagonal <gateflow.numeric._compile.Compiled.diagonal>`: every state
block is a pure diag(coef), every block of one size n), unit u of s_t depends on unit u of
s_{t−1} alone. With S state blocks, J_t is per unit an S × S matrix, and so is every
product ∂s_T/∂s_{T−k}: the dense sweep's rows G (B, R, n) per block, R = n rows per output
block, hold one nonzero per row and block. This module carries only those: G[Y] of shape
(B, R, n) with R = one row per output block X (plus the probe), G[Y][b, X, u] =
∂X_T[u]/∂Y_{T−k}[u], updated by the very same reverse plan (its steps are all elementwise
scatters: :class:`~gateflow.numeric._backward.Sweep`). A step costs O(B·n·S²) instead of
O(B·n²·S²); the whole sweep O(T·B·n·S²) instead of O(T·B·N³) for N = S·n.

* **Scaling.** Each row (b, X, u) carries its own natural-log scale, renormalised when its
  squared norm over the state blocks leaves the dense sweep's range
  (:func:`~gateflow.numeric._renorm.renorm_range`), so T = 100 000 neither under- nor
  overflows.
* **Norms.** A block ∂X_T/∂Y_{T−k} is diag(e^{ls} G[Y][:, X, :]): every registered norm
  with a diagonal form (:meth:`BlockNorm.diagonal
  <gateflow.numeric._measure.BlockNorm.diagonal>`: Frobenius, spectral, stable rank)
  measures it from its log|entries|; its singular values are its |entries|, sorted; the
  probe ⟨v, s_T⟩'s gradient is per unit a row of S entries. The direct path is the dense
  path's (:class:`~gateflow.numeric._norms.DirectPath`), computed in the same order.
  These are evaluated once per chunk of steps, vectorised over time.
* **Forward pass.** No product W v depends on the state, so every product is computed for a
  whole chunk of steps at once (one GEMM per group of products for Tc·B rows); only the
  nodes that read the previous state run step by step. The backward sweep recomputes each
  chunk's coefficients from the trajectory the same way, fully batched. (A GEMM of Tc·B
  rows rounds differently from B rows: states and coefficients agree with the dense path's
  to rounding, not bit for bit.)
* **Input blocks.** ∂X_T/∂x_{T−k} = Σ_Y diag(G_k[X, Y]) ∂Y_{T−k}/∂x_{T−k}: the input
  plan's elementwise steps on the per-unit rows, then one row-scaled (n × d) product
  Σ_j diag(w_j) W_j per group of products on x and output block, measured by the same
  norms as the dense pull-back (:mod:`gateflow.numeric._pullback`).

:func:`supported` says whether a run can take this path (the flag, input plans whose
products all act on x, norms with a diagonal form); :func:`sweep` runs one batch slice;
:func:`chunks` is the batched forward pass, shared with the Lyapunov spectrum
(:mod:`gateflow.numeric._lyapunov`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from gateflow.cells._block import Block
from gateflow.cells._record import INPUT
from gateflow.numeric._backward import Sweep, check_rows
from gateflow.numeric._compile import (
    Bound,
    Compiled,
    Group,
    GroupStep,
    Node,
    Scatter,
    check_products,
    check_trajectory,
    diverged,
    first_nonfinite,
)
from gateflow.numeric._measure import LN10, BlockNorm, Context, Observer, Step, logsumexp
from gateflow.numeric._norms import DirectPath
from gateflow.numeric._pullback import Plan
from gateflow.numeric._renorm import renorm_range

__all__ = ["Forward", "chunks", "supported", "sweep"]

#: Coefficients are kept from the forward pass up to this size, or the trajectory's.
KEEP_BYTES = 128 * 2**20
#: Working memory of one chunk of steps (its products, nodes, coefficients and the rows
#: kept for the vectorised measures); the chunk length follows from it.
CHUNK_BYTES = 32 * 2**20


def _diagonal_forms(observers: tuple[Observer, ...]) -> bool:
    """Every observer has a diagonal form (:meth:`BlockNorm.diagonal` is not None on a
    probe diag(1))."""
    values: dict[str, Any] = {}
    for o in observers:
        v = o.measure().diagonal(np, np.zeros((1, 1)), values)
        if v is None:
            return False
        values[o.name] = v
    return True


def _input_plan_supported(plan: Compiled, state: tuple[str, ...]) -> bool:
    """The input plan's products all act on x and its elementwise steps reach only state
    blocks and those products (no x used elementwise, no product of an intermediate):
    then a per-unit row pulled back is one row-scaled W per product."""
    atoms = {a for op in plan.reverse if isinstance(op, GroupStep) for a in op.group.atoms}
    for op in plan.reverse:
        if isinstance(op, GroupStep):
            if op.group.arg != INPUT:
                return False
        elif any(src not in state and src not in atoms for src, _ in op.sources):
            return False
    return True


def supported(comp: Compiled, pull: Plan | None, observers: tuple[Observer, ...]) -> bool:
    """Whether :func:`~gateflow.numeric._chain.all_lags` runs this path: the cell is
    diagonal per unit (the structure's verdict, :attr:`Compiled.diagonal`), every norm asked
    for has a diagonal form, and what is pulled back is the input x through products on x
    alone (never a stack's layer outputs: a stack is not diagonal)."""
    if not comp.diagonal or not _diagonal_forms(observers):
        return False
    if pull is None:
        return True
    if pull.outputs:
        return False
    return pull.inputs is None or _input_plan_supported(pull.inputs, tuple(comp.cell.state))


# -- the batched forward pass -------------------------------------------------------------


class Forward:
    """A diagonal cell's forward plan split in two: what reads only x and the weights (every
    group of products, and the nodes of those), evaluated for a whole chunk of steps at
    once, and the nodes that read the previous state, evaluated step by step."""

    def __init__(self, bound: Bound):
        comp = bound.c
        self.bound, self.xp = bound, bound.xp
        self.state = tuple(comp.cell.state)
        dynamic = {f"{s}_prev" for s in self.state}
        self.static: list[Group | Node] = []
        self.dynamic: list[Node] = []
        for item in comp.forward:
            if isinstance(item, Group):
                if item.arg in dynamic:  # a product of the state: not diagonal
                    raise AssertionError(f"{comp.cell.name}: a product W v of the state")
                self.static.append(item)
            elif any(a in dynamic for a in item.args):
                dynamic.add(item.name)
                self.dynamic.append(item)
            else:
                self.static.append(item)
        #: static values the step-by-step nodes read (never a weight matrix)
        self.reads = sorted({a for item in self.dynamic for a in item.args} - dynamic)
        self.groups = [g for g in self.static if isinstance(g, Group)]
        #: the products and their arguments (what :func:`check_products` reads)
        self.products_read = sorted({a for g in self.groups for a in (*g.atoms, g.arg)})

    def width(self) -> int:
        """Values per row of a chunk (products, nodes), in units of the largest block: an
        upper bound for the chunk's memory."""
        n = max(self.bound.dim.values())
        rows = sum(self.bound.offsets[g.atoms][-1] for g in self.groups)
        return rows + n * (len(self.static) + len(self.dynamic))

    def products(self, xc) -> dict:
        """Every static value for the rows ``xc`` (rows, d): the groups' GEMMs and their
        nodes, with the weights."""
        bound = self.bound
        vals = {INPUT: xc, **bound.params}
        for item in self.static:
            if isinstance(item, Group):
                out = vals[item.arg] @ bound.stacked[item.atoms][1]
                off = bound.offsets[item.atoms]
                for k, a in enumerate(item.atoms):
                    vals[a] = out[:, off[k]:off[k + 1]]
            else:
                vals[item.name] = item.fn(*(vals[a] for a in item.args))
        return vals

    def nodes(self, vals: dict, prev: dict) -> dict:
        """``vals`` with the previous states and every node that reads them."""
        vals = {**vals, **{f"{s}_prev": v for s, v in prev.items()}}
        for item in self.dynamic:
            vals[item.name] = item.fn(*(vals[a] for a in item.args))
        return vals

    def row_coefficients(self, x0, s0, plans: tuple[Compiled, ...]) -> list[set[int]]:
        """Per plan, which coefficients vary with the sequence and step (arrays with a row
        per sequence), from step 1's values: the others (LRU's λ, a bias) are constants,
        the same at every step."""
        B = x0.shape[0]
        prev = {s: self.xp.zeros((B, self.bound.dim[s]), dtype=self.bound.c.dtype)
                if s0 is None or s not in s0 else s0[s] for s in self.state}
        vals = self.nodes(self.products(x0), prev)
        return [{j for j, c in enumerate(self.bound.coefficients(vals, plan))
                 if getattr(c, "ndim", 0) == 2} for plan in plans]

    def bad_product(self, vals: dict, rows: int, B: int) -> int | None:
        """The first step (0-based in the chunk) whose products are not finite although
        their argument is (:func:`check_products` then says why), or None."""
        xp, first = self.xp, None
        for g in self.groups:
            whole = vals[g.atoms[0]].base
            parts = [vals[a] for a in g.atoms]
            total = xp.sum(whole) if whole is not None and whole.shape[0] == rows \
                else sum(xp.sum(p) for p in parts)
            if bool(xp.isfinite(total)):
                continue
            ok = xp.ones(rows, dtype=bool)
            for p in parts:
                ok &= xp.all(xp.isfinite(p), axis=1)
            arg = vals[g.arg]
            if getattr(arg, "ndim", 0) == 2:
                ok |= ~xp.all(xp.isfinite(arg), axis=1)
            if not bool(xp.all(ok)):
                i = int(xp.argmin(ok)) // B
                first = i if first is None else min(first, i)
        return first


def step_values(vals: dict, i: int, B: int, rows: int, names) -> dict:
    """Step ``i`` of a chunk's values ``names`` (``rows`` = Tc·B rows): row slices of the
    per-row arrays, the rest (parameter vectors, constants) as they are."""
    return {a: vals[a][i * B:(i + 1) * B] if _per_row(vals[a], rows) else vals[a]
            for a in names}


def _per_row(v, rows: int) -> bool:
    """A chunk's value with one row per sequence and step: (rows, width). (Weight matrices
    are 2-D too: callers ask for nodes, products and coefficients only, never a weight.)"""
    return getattr(v, "ndim", 0) == 2 and v.shape[0] == rows


def keeps(coef_bytes: int, trajectory_bytes: int) -> bool:
    """Keep every step's coefficients from the forward pass (rather than recompute them
    chunk by chunk from the trajectory) when they take no more memory than the trajectory
    would, or than :data:`KEEP_BYTES`."""
    return coef_bytes <= max(KEEP_BYTES, trajectory_bytes)


def chunk_length(forward: Forward, T: int, B: int, extra: int) -> int:
    """Steps per chunk: what fits :data:`CHUNK_BYTES`, with ``extra`` more values per row
    (per sequence and step) beside the forward pass's."""
    return max(1, min(T, CHUNK_BYTES // (8 * B * (forward.width() + extra))))


def chunks(bound: Bound, x, s0, check: Callable[[], None], length: int,
           plans: tuple[Compiled, ...] = (), keep: dict | None = None
           ) -> Iterator[tuple[int, list, dict]]:
    """The forward pass, ``length`` steps at a time: yield (t0, coefficient lists per
    plan (each coefficient for the chunk's Tc·B rows), states of the chunk: block ->
    (Tc, B, n) for t = t0..t0+Tc−1). With ``keep`` (block -> (T+1, B, n)), the states
    are written there (row 0 is s0). ``check`` is called once per step."""
    forward = Forward(bound)
    xp, dt = bound.xp, bound.c.dtype
    T, B, d = x.shape
    state = forward.state
    prev = {s: xp.zeros((B, bound.dim[s]), dtype=dt) if s0 is None or s not in s0
            else xp.asarray(s0[s], dtype=dt) for s in state}
    if keep is not None:
        for s in state:
            keep[s][0] = prev[s]
    for t0 in range(1, T + 1, length):
        Tc = min(length, T + 1 - t0)
        rows = Tc * B
        vals = forward.products(x[t0 - 1:t0 - 1 + Tc].reshape(rows, d))
        bad = forward.bad_product(vals, rows, B)
        out = {s: keep[s][t0:t0 + Tc] if keep is not None else
               xp.empty((Tc, B, bound.dim[s]), dtype=dt) for s in state}
        before = {s: xp.empty((Tc, B, bound.dim[s]), dtype=dt) for s in state} \
            if plans else None
        for i in range(Tc):
            check()
            if bad == i:  # (check_products reads the products and their arguments)
                check_products(bound, step_values(vals, i, B, rows, forward.products_read),
                               t0 + i)
            now = forward.nodes(step_values(vals, i, B, rows, forward.reads), prev)
            for s in state:
                if before is not None:
                    before[s][i] = prev[s]
                out[s][i] = now[s]
                prev[s] = out[s][i]
        coefs = []
        if plans:
            assert before is not None
            full = forward.nodes(vals, {s: v.reshape(rows, -1) for s, v in before.items()})
            coefs = [bound.coefficients(full, plan) for plan in plans]
        yield t0, coefs, out


def chunk_coefficients(forward: Forward, x, states: dict, t0: int, Tc: int,
                       plans: tuple[Compiled, ...]) -> list:
    """The coefficients of steps t0..t0+Tc−1 for each plan, recomputed from the trajectory
    in one batch (Tc·B rows)."""
    B, d = x.shape[1], x.shape[2]
    rows = Tc * B
    vals = forward.products(x[t0 - 1:t0 - 1 + Tc].reshape(rows, d))
    prev = {s: states[s][t0 - 1:t0 - 1 + Tc].reshape(rows, -1) for s in forward.state}
    full = forward.nodes(vals, prev)
    return [forward.bound.coefficients(full, plan) for plan in plans]


def _at(coefs: list, i: int, B: int, rows: int) -> list:
    """Step ``i`` of a chunk's coefficient list (a coefficient is never a matrix)."""
    return [c[i * B:(i + 1) * B] if _per_row(c, rows) else c for c in coefs]


# -- the sweep ------------------------------------------------------------------------------


class _UnitStep(Step):
    """A sweep step whose rows are per unit: :meth:`sq` is each entry squared (for
    :func:`check_rows`, which only asks whether they are finite)."""

    def sq(self, s: str):
        if s not in self._sq:
            a = self.G[s]
            self._sq[s] = (a * a).astype(np.float64)
        return self._sq[s]


class _Pull:
    """The input blocks of one batch slice: per sweep step, the per-unit rows pulled back
    through the input plan onto x (one row-scaled (n × d) product per group), measured by
    the dense pull-back's norms."""

    def __init__(self, plan: Compiled, bound: Bound, measures: dict, ctx: Context,
                 out_blocks: list[str], blocks: tuple[Block, ...], d: int):
        self.plan, self.measures, self.xp = plan, measures, bound.xp
        self.n_out, self.n, self.d = len(out_blocks), ctx.n, d
        self.weights = {}
        for op in plan.reverse:
            if isinstance(op, GroupStep):
                w = bound.stacked[op.group.atoms][0]
                off = bound.offsets[op.group.atoms]
                self.weights[op.group.atoms] = [w[off[j]:off[j + 1]] for j in
                                                range(len(op.group.atoms))]
        n = ctx.n
        rows = {X: slice(i * n, (i + 1) * n) for i, X in enumerate(out_blocks)}
        self.ctx = Context(ctx.backend, ctx.dtype, ctx.T, ctx.B, n, (INPUT,), blocks, rows,
                           dims={INPUT: d})
        for m in measures.values():
            m.init(self.ctx)

    def observe(self, k: int, G: dict, logscale, coefs: list) -> None:
        """Sweep step k: ``G`` = per-unit rows against the state at t = T − k + 1,
        ``coefs`` the input plan's coefficients at t."""
        xp, R = self.xp, self.n_out
        adj: dict[str, Any] = {s: g[:, :R, :] for s, g in G.items()}  # views: never written
        B = next(iter(adj.values())).shape[0]
        Gx = xp.zeros((B, R, self.n, self.d), dtype=self.ctx.dtype)
        for op in self.plan.reverse:
            if isinstance(op, Scatter):
                a = adj.get(op.sink)
                if a is None:
                    continue
                for src, j in op.sources:
                    term = a * _rows(coefs[j])
                    adj[src] = adj[src] + term if src in adj else term
                continue
            weights = self.weights[op.group.atoms]
            for v, pairs in op.terms:
                a = adj.get(v)
                if a is None:
                    continue
                for j, kc in pairs:
                    # rows (X, u) of diag(a ⊙ coef) W_j: the row u of W_j, scaled
                    Gx += (a * _rows(coefs[kc]))[..., None] * weights[j]
        step = Step(self.ctx, k, {INPUT: Gx.reshape(B, R * self.n, self.d)},
                    logscale[:, :R, :].reshape(B, R * self.n), coefs)
        check_rows(step, INPUT)
        for m in self.measures.values():
            m.observe(step)

    def finish(self) -> dict:
        return {name: m.finish() for name, m in self.measures.items()}


def _rows(c):
    """A coefficient (B, n), (n,) or scalar, broadcast over the rows of (B, R, n)."""
    return c[..., None, :] if getattr(c, "ndim", 0) else c


def sweep(comp: Compiled, bound: Bound, xd, s0, probe, blocks: tuple[Block, ...],
          observers: tuple[Observer, ...], direct_norms: tuple[Observer, ...],
          singular_lags: tuple[int, ...], out_blocks: list[str], progress,
          check: Callable[[], None], inputs: tuple[Plan, dict] | None = None,
          keep_states: bool = False) -> dict:
    """Forward pass and elementwise backward sweep of one batch slice. Returns ``{"norms":
    name -> per block (T, B), "direct": block -> key -> (T, B), "singular_values": lag ->
    block -> (B, n), "probe": (T, B) or None, "inputs": name -> block -> (T, B),
    "states": block -> (T+1, B, n) with ``keep_states``, else None}``, host arrays, as the
    dense sweep's measures give them."""
    with np.errstate(divide="ignore", under="ignore", over="ignore", invalid="ignore"):
        return _sweep(comp, bound, xd, s0, probe, blocks, observers, direct_norms,
                      singular_lags, out_blocks, progress, check, inputs, keep_states)


def _sweep(comp: Compiled, bound: Bound, xd, s0, probe, blocks, observers, direct_norms,
           singular_lags, out_blocks, progress, check, inputs, keep_states) -> dict:
    xp, dt, be = bound.xp, comp.dtype, comp.be
    cell = comp.cell
    state = tuple(cell.state)
    dims = bound.dim
    n = bound.n
    T, B, d = xd.shape
    R = len(out_blocks) + (0 if probe is None else 1)
    in_plan = None if inputs is None else inputs[0].inputs
    plans = (comp,) if in_plan is None else (comp, in_plan)

    forward = Forward(bound)
    coefs_per_step = len(comp.layout) + (0 if in_plan is None else len(in_plan.layout))
    length = chunk_length(forward, T, B, n * (coefs_per_step + R * (len(state) + 1)))
    # The coefficients of every step are kept from the forward pass when they take no more
    # memory than the trajectory (or KEEP_BYTES); the trajectory itself is then kept only
    # if asked for. Otherwise each chunk's are recomputed from the trajectory.
    traj_bytes = (T + 1) * B * sum(dims.values()) * dt.itemsize
    row_coefs = forward.row_coefficients(xd[0], s0, plans)
    store = keeps(sum(map(len, row_coefs)) * T * B * n * dt.itemsize, traj_bytes)
    states = {s: xp.empty((T + 1, B, dims[s]), dtype=dt) for s in state} \
        if keep_states or not store else None
    stored: list[list[Any]] | None = [[xp.empty((T, B, n), dtype=dt) if j in rows_p else None
               for j in range(len(plan.layout))] for plan, rows_p in zip(plans, row_coefs)] \
        if store else None
    constants: list[list] = [[] for _ in plans]
    bad: dict[str, int] = {}
    for t0, coefs, now in chunks(bound, xd, s0, check, length, plans if store else (),
                                 states):
        Tc = now[state[0]].shape[0]
        if stored is not None:
            for p, (per, got) in enumerate(zip(stored, coefs)):
                for j, c in enumerate(got):
                    if per[j] is not None:
                        per[j][t0 - 1:t0 - 1 + Tc] = c.reshape(Tc, B, -1)
                constants[p] = [None if per[j] is not None else c for j, c in enumerate(got)]
        if states is None:  # the divergence check, chunk by chunk
            for s in state:
                first = None if s in bad else first_nonfinite(xp, now[s])
                if first is not None:
                    bad[s] = t0 + first
    if states is not None:
        check_trajectory(xp, states)
    for s in state:
        if s in bad:
            raise diverged(s, bad[s])

    def chunk_coefs(t0: int, Tc: int) -> list:
        """The chunk's coefficients per plan, each for its Tc·B rows (or a constant)."""
        if stored is None:
            assert states is not None
            return chunk_coefficients(forward, xd, states, t0, Tc, plans)
        return [[c if per[j] is None else per[j][t0 - 1:t0 - 1 + Tc].reshape(Tc * B, -1)
                 for j, c in enumerate(const)] for per, const in zip(stored, constants)]

    # Seed: each output block's rows are the identity (1 at its own unit), the probe row v.
    G = {s: xp.zeros((B, R, n), dtype=dt) for s in state}
    index = {X: i for i, X in enumerate(out_blocks)}
    for X, i in index.items():
        G[X][:, i, :] = 1
    if probe is not None:
        first = 0
        for s in state:
            G[s][:, -1, :] = probe[:, first:first + dims[s]]
            first += dims[s]
    ls = xp.zeros((B, R, n), dtype=np.float64)
    lo, hi = renorm_range(dt)

    ctx = Context(be, dt, T, B, n, state, tuple(blocks), {X: slice(i, i + 1)
                                                         for X, i in index.items()},
                  None if probe is None else R - 1, comp.direct, dict(dims))
    norms: list[tuple[Observer, BlockNorm]] = []
    for o in observers:
        m = o.measure()
        m.init(ctx)
        norms.append((o, m))
    direct = DirectPath([(o.name, o.key, o.measure()) for o in direct_norms])
    direct.init(ctx)
    svals: dict[int, dict[str, Any]] = {}
    probe_out = xp.empty((T, B)) if probe is not None else None
    pulling = None if in_plan is None else _Pull(
        in_plan, bound, inputs[1], ctx, out_blocks, tuple(inputs[0].blocks), d)
    sweep_ = Sweep(comp, bound, B, R)  # a diagonal plan: elementwise scatters only
    lags = set(singular_lags)

    for t_end in range(T, 0, -length):
        t0 = max(1, t_end - length + 1)
        Tc = t_end - t0 + 1
        rows = Tc * B
        coefs_all = chunk_coefs(t0, Tc)
        kept = {s: xp.empty((Tc, B, R, n), dtype=dt) for s in state}
        kept_ls = xp.empty((Tc, B, R, n), dtype=np.float64)
        k0 = T - t_end + 1  # the chunk's first lag
        for j in range(Tc):
            check()
            t = t_end - j
            k = k0 + j
            coefs = _at(coefs_all[0], t - t0, B, rows)
            if pulling is not None:
                pulling.observe(k, G, ls, _at(coefs_all[1], t - t0, B, rows))
            adj = sweep_.backward(G, coefs)
            G = {s: adj[f"{s}_prev"] if f"{s}_prev" in adj else xp.zeros((B, R, n), dtype=dt)
                 for s in state}
            for s in state:  # what the measures see: before renormalising
                kept[s][j] = G[s]
            kept_ls[j] = ls
            squares = [(g * g).astype(np.float64, copy=False) for g in G.values()]
            total = squares[0] if len(squares) == 1 else sum(squares)
            if not (float(xp.max(total)) <= hi and float(xp.min(total)) >= lo):
                # out of range, not finite, or exact zeros: look closely
                if not bool(xp.all(xp.isfinite(total))):
                    check_rows(_UnitStep(ctx, k, G, ls, coefs), "the state")
                drift = (total > hi) | ((total < lo) & (total > 0))
                if bool(xp.any(drift)):
                    scale = xp.where(drift, xp.sqrt(total), 1.0)
                    ls = ls + xp.log(scale)
                    inv = (1.0 / scale).astype(dt)
                    G = {s: g * inv for s, g in G.items()}
            if progress is not None:
                progress(k)
        # The chunk's lags k0..k0+Tc−1, measured at once.
        span = slice(k0 - 1, k0 - 1 + Tc)
        for b in blocks:
            i = index[b.out]
            log_abs = (kept_ls[:, :, i, :] + xp.log(xp.abs(kept[b.wrt][:, :, i, :]))
                       ).reshape(rows, n)
            values: dict[str, Any] = {}
            for o, m in norms:
                v = values[o.name] = m.diagonal(xp, log_abs, values)
                m.out[b][span] = m.record(v).reshape(Tc, B)
            for k in lags.intersection(range(k0, k0 + Tc)):
                la = log_abs.reshape(Tc, B, n)[k - k0]
                svals.setdefault(k, {})[b] = -xp.sort(-la, axis=1) / LN10
        if probe_out is not None:
            sq = sum((kept[s][:, :, -1, :] * kept[s][:, :, -1, :]).astype(np.float64)
                     for s in state)
            v = 2 * kept_ls[:, :, -1, :] + xp.log(sq)
            probe_out[span] = 0.5 * logsumexp(xp, v, 2) / LN10
        _direct(direct, ctx, coefs_all[0], t0, Tc, k0, B)

    host = be.to_host
    return {"norms": {o.name: m.finish() for o, m in norms},
            "direct": direct.finish(),
            "singular_values": {k: {b: host(v) for b, v in per.items()}
                                for k, per in svals.items()},
            "probe": None if probe_out is None else host(probe_out),
            "inputs": {} if pulling is None else pulling.finish(),
            "states": None if states is None else {s: host(v) for s, v in states.items()}}


def _direct(direct: DirectPath, ctx: Context, coefs: list, t0: int, Tc: int, k0: int,
            B: int) -> None:
    """The direct path ∏ diag(c_t) over a chunk's lags, as :class:`DirectPath` computes it
    step by step: log|c_t| added in the sweep's order (t descending) one step at a time
    (a cumulative sum, in that order), then each norm's diagonal form."""
    xp = ctx.xp
    for s, j in ctx.direct.items():
        n = ctx.size(s)
        c = xp.asarray(coefs[j], dtype=np.float64)
        if getattr(c, "ndim", 0) == 2 and c.shape[0] == Tc * B:
            c = c.reshape(Tc, B, n)
        c = xp.broadcast_to(c, (Tc, B, n))[::-1]  # lag order: t descending
        steps = xp.concatenate([direct.log_abs[s][None], xp.log(xp.abs(c))], axis=0)
        acc = xp.cumsum(steps, axis=0)[1:]
        direct.log_abs[s] = acc[-1].copy()
        flat = acc.reshape(Tc * B, n)
        values: dict[str, Any] = {}
        for name, key, norm in direct.norms:
            v = values[name] = norm.diagonal(xp, flat, values)
            if v is None:
                continue
            out = direct.out[s]
            if key not in out:
                out[key] = xp.empty((ctx.T, B))
            out[key][k0 - 1:k0 - 1 + Tc] = norm.record(v).reshape(Tc, B)

