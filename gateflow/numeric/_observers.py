"""What the backward sweep measures, as a registry of observers.

Every quantity the sweep records at each lag k (a norm of ∂X_T/∂Y_{T−k}, …) is an
:class:`Observer`, registered once in :data:`OBSERVERS` under its name. The registry, not
string literals elsewhere, drives the CLI's ``--norms`` choices, the JSON keys and CSV
columns of ``gateflow decay`` (``Observer.key``), and the figures' axis labels
(``Observer.label``). Adding a measurement means adding its module and one registration.

(Skeleton: the sweep still computes the two norms inline; the observer protocol — init,
observe each step, finish — is being moved here.)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NORMS", "OBSERVERS", "Observer", "register"]


@dataclass(frozen=True)
class Observer:
    """One per-lag measurement of a Jacobian block.

    Attributes:
        name: the CLI choice (``--norms frobenius``) and registry key.
        key: its JSON key and CSV column (``"log10_frobenius"``).
        label: mathtext for figures, with ``{J}`` standing for the block, e.g.
            ``r"\\|{J}\\|_F"``.
        description: one line for ``--help``, including what it costs.
    """

    name: str
    key: str
    label: str
    description: str


OBSERVERS: dict[str, Observer] = {}


def register(observer: Observer) -> Observer:
    """Add ``observer`` to :data:`OBSERVERS` (its name must be new)."""
    if observer.name in OBSERVERS:
        raise ValueError(f"observer {observer.name!r} is already registered")
    OBSERVERS[observer.name] = observer
    return observer


register(Observer("frobenius", "log10_frobenius", r"\|{J}\|_F",
                  "log10 Frobenius norm; one pass over the rows per step (cheap)"))
register(Observer("spectral", "log10_spectral", r"\|{J}\|_2",
                  "log10 spectral norm (largest singular value); a warm-started subspace "
                  "iteration per step, about 6x the cost of the Frobenius norm"))

#: The names of the registered observers, in registration order (CLI and JSON order).
NORMS = tuple(OBSERVERS)
