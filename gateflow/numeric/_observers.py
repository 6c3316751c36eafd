"""What the backward sweep measures, as a registry of observers.

Every per-lag norm of ∂X_T/∂Y_{T−k} the sweep can record is an :class:`Observer`,
registered once in :data:`OBSERVERS` under its name. The registry, not string literals
elsewhere, drives the ``norms`` that ``all_lags`` accepts (:data:`NORMS`), the CLI's
``--norms`` choices, the keys of ``ChainResult.blocks``/``.direct`` and the JSON keys and
CSV columns of ``gateflow decay`` (``Observer.key``), and the figures' axis labels
(``Observer.label``).

Each observer names the :class:`~gateflow.numeric._measure.BlockNorm` that computes it (the
protocol: ``init`` / ``observe`` each step / ``finish``, see :mod:`._measure`). Adding a
norm means adding its module, which defines ``OBSERVER``, and one line in
:data:`_PLUGINS`; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module

from gateflow._validate import choose, items_of
from gateflow.numeric._measure import Observer
from gateflow.numeric._norms import Frobenius, Spectral

__all__ = ["NORMS", "OBSERVERS", "Observer", "choose_norms", "register", "resolve"]

OBSERVERS: dict[str, Observer] = {}


def register(observer: Observer) -> Observer:
    """Add ``observer`` to :data:`OBSERVERS` (its name must be new, and what it requires
    registered before it)."""
    if observer.name in OBSERVERS:
        raise ValueError(f"observer {observer.name!r} is already registered")
    missing = [r for r in observer.requires if r not in OBSERVERS]
    if missing:
        raise ValueError(f"observer {observer.name!r} requires unregistered {missing}")
    OBSERVERS[observer.name] = observer
    return observer


def choose_norms(norms, *, allow_empty: bool = False) -> tuple[Observer, ...]:
    """The one reader of a norm list: registered names (``"frobenius"``), one
    comma-separated string, or the :class:`Observer` records themselves, as the registry's
    observers; a wrong name is refused naming the valid ones; duplicates dropped, order
    kept; at least one unless ``allow_empty``."""
    names = tuple(OBSERVERS)
    out: dict[str, Observer] = {}
    for item in items_of(norms, names, "norm", allow_empty=allow_empty):
        if isinstance(item, Observer) and OBSERVERS.get(item.name) is item:
            out[item.name] = item
        else:
            name = choose(item, names, "norm")
            out[name] = OBSERVERS[name]
    return tuple(out.values())


def resolve(names: Iterable[str]) -> tuple[Observer, ...]:
    """The observers ``names`` (registered names) and everything they require, in
    registration order (so each comes after what it builds on)."""
    want: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in want:
            want.add(name)
            todo += OBSERVERS[name].requires
    return tuple(o for name, o in OBSERVERS.items() if name in want)


register(Observer("frobenius", "log10_frobenius", r"\|{J}\|_F",
                  "log10 Frobenius norm; one pass over the rows per step (cheap)", Frobenius))
register(Observer("spectral", "log10_spectral", r"\|{J}\|_2",
                  "log10 spectral norm (largest singular value); a warm-started subspace "
                  "iteration per step, about 6x the cost of the Frobenius norm", Spectral))

#: Modules that each define ``OBSERVER``, registered in this order after the two above.
_PLUGINS: tuple[str, ...] = (
    "gateflow.numeric._stable_rank",
)
for _module in _PLUGINS:
    register(import_module(_module).OBSERVER)

#: The names of the registered observers, in registration order (CLI and JSON order).
NORMS = tuple(OBSERVERS)

