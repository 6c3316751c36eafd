"""gateflow: exact, fast gradient flow through recurrent cells.

The package is layered; each layer owns its facts and imports only the layers below it
(enforced by import-linter, see ``ARCHITECTURE.md``)::

    cli            the Typer command line: parses options, calls a job
    jobs           decay, report, sweep: orchestration only
    presentation   figures, console tables and progress, report rendering
    analysis       fits (decay factor, e-folding lag, memory horizon) and theory
    models         parameters, inputs, weight-file formats
    numeric        backends, compiled evaluators, the all-lag sweep and its observers
    symbolic       exact structured Jacobians (SymPy) and their printing
    cells          the Cell record and the declared cells (equations as data)
    base           _errors, _validate, _io, _memory, _version

Jacobian layout everywhere: rows = outputs, (∂s_t/∂s_{t−1})[a, b] = ∂s_t[a]/∂s_{t−1}[b].

The public API is declared once, in ``__init__.pyi`` (grouped by level: cells and
derivation, measurement, models, analysis, figures and reports, jobs). Type checkers read
it; at run time ``lazy_loader`` reads the same lines, so each name loads on first use and
``import gateflow`` is instant (the numeric path never imports SymPy unless it derives).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
