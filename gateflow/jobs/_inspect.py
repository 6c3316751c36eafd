"""``gateflow inspect FILE``: every recurrent module of a model file, and the exact
``gateflow decay`` command that analyses each. Orchestration only: the formats find the
modules (:func:`gateflow.models._model.find_models`), the console draws the table."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from gateflow._io import STDOUT, check_file, write_files
from gateflow.models._model import find_models
from gateflow.models.formats._recurrent import Recurrent

__all__ = ["decay_command", "inspect_model"]


def decay_command(path, model: Recurrent, several: bool) -> str | None:
    """The ``gateflow decay`` command for ``model`` (None when gateflow cannot analyse it):
    ``--module`` when the file holds several modules, ``--layer all`` for a unidirectional
    stack (layer 0 of a bidirectional one, whose stack is not causal), ``--direction`` for
    two directions, ``--cell`` when the file cannot say which cell."""
    parts = ["gateflow", "decay", "--weights", shlex.quote(str(path))]
    if several:
        parts += ["--module", shlex.quote(model.module)]
    if model.layers > 1:
        parts += ["--layer", "0" if model.bidirectional else "all"]
    if model.bidirectional:
        parts += ["--direction", "forward"]
    if model.cell is None:
        parts += ["--cell", model.cells[0]]
    return " ".join(parts)


def inspect_model(path, *, json_path=None, overwrite: bool = False,
                  quiet: bool = False) -> list[dict]:
    """List the recurrent modules of ``path`` (a table on stdout unless quiet or the JSON
    goes there); with ``json_path``, also write them as JSON (``-`` for stdout). Returns
    one dict per module (:meth:`Recurrent.summary` plus its ``command``)."""
    out = None if json_path is None else check_file(json_path, "JSON", overwrite=overwrite)
    models = find_models(path)
    rows = [{**m.summary(), "command": decay_command(path, m, len(models) > 1)}
            for m in models]
    if out is not None:
        doc = {"format": "gateflow-inspect", "format_version": 1, "file": str(path),
               "modules": rows}
        write_files({out: (json.dumps(doc, indent=1) + "\n").encode()}, overwrite=overwrite)
    if not quiet and out != STDOUT:
        from gateflow.presentation._console import console, modules_table

        console(stderr=False).print(modules_table(Path(str(path)).name, rows))
        if out is not None:  # a message, not data: stderr
            console().print(f"wrote {out}", highlight=False, soft_wrap=True)
    return rows
