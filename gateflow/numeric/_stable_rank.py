"""The stable rank ‖J‖²_F / ‖J‖²₂ of a Jacobian block: how many directions carry the gradient.

It lies in [1, rank J] (1: one direction dominates; rank J: all singular values equal)
and is reported as is, not as a log: its JSON key and CSV column is ``stable_rank``. An
exactly zero block (an RNN with U = 0) has stable rank 0 (no direction carries anything).
It reuses the Frobenius and spectral norms of the same step (computed too, reported only
if asked for), so it costs what the spectral norm costs.
"""

from __future__ import annotations

from gateflow.cells._block import Block
from gateflow.numeric._measure import BlockNorm, Observer, Step

__all__ = ["OBSERVER", "StableRank"]


def _ratio(xp, log_f, log_2):
    """exp(2 (ln‖J‖_F − ln‖J‖₂)), and 0 for an exact zero (both −inf)."""
    zero = log_f == -xp.inf
    return xp.where(zero, 0.0, xp.exp(2 * (log_f - xp.where(zero, 0.0, log_2))))


class StableRank(BlockNorm):
    name = "stable_rank"
    log10 = False

    def value(self, step: Step, block: Block):
        return _ratio(self.ctx.xp, step.values["frobenius"][block], step.values["spectral"][block])

    def diagonal(self, xp, log_abs, values):
        return _ratio(xp, values["frobenius"], values["spectral"])


OBSERVER = Observer(
    "stable_rank", "stable_rank", r"\|{J}\|_F^2 / \|{J}\|_2^2",
    "stable rank ||J||_F^2 / ||J||_2^2 in [1, rank] (not a log; 0 for J = 0); costs the "
    "spectral norm", StableRank, requires=("frobenius", "spectral"), log10=False)
