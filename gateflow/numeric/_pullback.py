"""Pull-backs of the sweep's rows onto what a step reads besides the previous state.

The backward sweep (:mod:`gateflow.numeric._chain`) holds G = ∂X_T/∂s_t, the rows of the
outputs asked for against the state *as carried* into step t + 1. Before it multiplies by
J_t it may pull G back once more, through the same step, onto something that step reads
(lag k − 1 at sweep step k, so lags run 0..T−1):

* the input x_t (blocks ``"X/x"``): G_x = G · ∂s_t/∂x_t, the input Jacobian of the cell
  (:func:`~gateflow.symbolic._derive.derive_input`, its own compiled plan);
* in a stack, the output y⁽ʲ⁾_t that layer j emits (blocks ``"X/y_lj"``, what a hook on
  layer j's output sees). y⁽ʲ⁾_t is carried (it *is* h⁽ʲ⁾_t) and read by layer j + 1 at
  the same step, so

      G_y = G[h_lj] + G[layers above j] · ∂(layers above j)_t/∂y⁽ʲ⁾_t

  where the second factor is the input Jacobian of the cell made of the layers above j
  with x standing for y⁽ʲ⁾ (:func:`gateflow.cells._stack.above`): the same engine, the
  same plan machinery, no derivative written by hand. Its coefficients are those of the
  upper layers' own step at t, recomputed from the trajectory (y⁽ʲ⁾_t = h⁽ʲ⁾_t and the
  upper states at t − 1): a forward step of the layers above j, cheap beside the sweep.

The pulled-back rows keep the carried rows' log scales, and are measured by fresh
instances of the same norms (:class:`~gateflow.numeric._measure.BlockNorm`), into the
result's ``inputs``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateflow.cells._block import Block
from gateflow.cells._record import INPUT, Cell
from gateflow.cells._stack import above, emitted, input_lag_blocks
from gateflow.numeric._backward import Sweep, check_rows
from gateflow.numeric._compile import Bound, Compiled, Scatter, compile_cell
from gateflow.numeric._measure import Context, Step

__all__ = ["Plan", "Pulling", "plan"]


@dataclass(frozen=True)
class _Above:
    """Layer j's output ``y``: the block that carries it, and the layers above it bound to
    their weights with their input plan (None for the top layer)."""

    y: str
    carried: str
    upper: tuple[Bound, Compiled] | None


@dataclass(frozen=True)
class Plan:
    """What a run pulls back, compiled once: the blocks (``"X/x"``, ``"X/y_lj"``), the
    cell's input plan when input blocks are asked for, and each layer output asked for."""

    blocks: tuple[Block, ...]
    inputs: Compiled | None
    outputs: tuple[_Above, ...]

    @property
    def sources(self) -> tuple[str, ...]:
        """What the rows are pulled back onto: ``x`` and/or ``y_lj``, in block order."""
        return tuple(dict.fromkeys(b.wrt for b in self.blocks))


def plan(cell: Cell, blocks: tuple[Block, ...], params: dict, backend: str, dtype
         ) -> Plan | None:
    """The pull-backs for ``blocks`` (those of
    :func:`~gateflow.cells._stack.input_lag_blocks`), or None."""
    blocks = tuple(b for b in blocks if b in input_lag_blocks(cell))
    if not blocks:
        return None
    wanted = {b.wrt for b in blocks}
    outs = []
    for y, carried in emitted(cell).items():
        if y not in wanted:
            continue
        up = above(cell, y)
        outs.append(_Above(y, carried, None if up is None else (
            Bound(compile_cell(up, backend, dtype), {p: params[p] for p in up.params}),
            compile_cell(up, backend, dtype, inputs=True))))
    return Plan(blocks, compile_cell(cell, backend, dtype, inputs=True)
                if INPUT in wanted else None, tuple(outs))


def _in_place(plan: Compiled, state) -> set[str]:
    """The state blocks a plan accumulates into (the LSTM's c, from h; a stack's h_l0, from
    layer 1): copied before each pull-back, which would change them in place."""
    return {s for op in plan.reverse
            for s in ([src for src, _ in op.sources] if isinstance(op, Scatter)
                      else [op.group.arg]) if s in state}


class Pulling:
    """One batch slice's pull-backs: :meth:`observe` each sweep step, then :meth:`finish`."""

    def __init__(self, plan: Plan, measures: dict, ctx: Context, bound: Bound, rows: int,
                 d: int):
        """``measures``: fresh norms (name -> BlockNorm); ``ctx``: the sweep's context (its
        rows and sizes); ``bound``: the cell's weights; ``rows``: rows carried; ``d``: x's
        size."""
        self.plan, self.measures = plan, measures
        dims = {**{a.y: ctx.size(a.carried) for a in plan.outputs}, INPUT: d}
        self.ctx = Context(ctx.backend, ctx.dtype, ctx.T, ctx.B, ctx.n, plan.sources,
                           plan.blocks, ctx.rows, dims={s: dims[s] for s in plan.sources})
        for m in measures.values():
            m.init(self.ctx)
        B = ctx.B
        self.inputs = None if plan.inputs is None else (
            Sweep(plan.inputs, bound, B, rows), _in_place(plan.inputs, ctx.state))
        self.outputs = [(a, None if a.upper is None else (
            *a.upper, Sweep(a.upper[1], a.upper[0], B, rows),
            _in_place(a.upper[1], a.upper[1].cell.state))) for a in plan.outputs]

    def observe(self, k: int, t: int, A: dict, in_coefs, states: dict, logscale) -> None:
        """Sweep step k: ``A`` = ∂(rows)_T/∂s_t (carried, t = T − k + 1), ``in_coefs``
        the cell's input coefficients at t (or None), ``states`` the trajectory."""
        xp = self.ctx.xp
        G = {}
        if self.inputs is not None:
            sweep, copy = self.inputs
            adj = sweep.backward({s: a.copy() if s in copy else a for s, a in A.items()},
                                 in_coefs)
            g = adj.get(INPUT)
            G[INPUT] = g if g is not None else xp.zeros(
                (*A[next(iter(A))].shape[:2], self.ctx.size(INPUT)), dtype=self.ctx.dtype)
        for a, pull in self.outputs:
            G[a.y] = A[a.carried]
            if pull is None:  # the top layer: nothing reads its output within the step
                continue
            bound, in_plan, sweep, copy = pull
            up = in_plan.cell
            vals = bound.step(states[a.carried][t], {s: states[s][t - 1] for s in up.state})
            adj = sweep.backward({s: A[s].copy() if s in copy else A[s] for s in up.state},
                                 bound.coefficients(vals, in_plan))
            if adj.get(INPUT) is not None:
                G[a.y] = A[a.carried] + adj[INPUT]
        step = Step(self.ctx, k, G, logscale, [] if in_coefs is None else in_coefs)
        check_rows(step, " and ".join(self.plan.sources))
        for m in self.measures.values():
            m.observe(step)

    def finish(self) -> dict:
        return {name: m.finish() for name, m in self.measures.items()}
