"""``gateflow inspect FILE``: every recurrent module of a model file, and the exact
``gateflow decay`` command that analyses each. Orchestration only: the formats find the
modules (:func:`gateflow.models._model.find_models`), the console draws the table.

A printed command is one line at any terminal width, every word shell-quoted
(:func:`shlex.quote`: a path with spaces, a module or cell name with brackets), so that
pasting it runs it as printed. A file in which nothing was found but something was skipped
(a subgraph not opened, an unknown op, arrays no vocabulary matched) is an error, exit 2,
after the skipped lines: "nothing found" is never said when something was skipped.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from gateflow._errors import GateflowError
from gateflow._io import STDOUT, check_file, write_files
from gateflow.models._model import find_models, skipped_summary
from gateflow.models.formats._files import label
from gateflow.models.formats._recurrent import Recurrent

__all__ = ["command_line", "decay_command", "inspect_model"]


def command_line(*words) -> str:
    """``words`` as one shell command line, each quoted where the shell needs it."""
    return " ".join(shlex.quote(str(w)) for w in words)


def decay_command(path, model: Recurrent, several: bool, rename=None) -> str | None:
    """The ``gateflow decay`` command for ``model`` (None when gateflow cannot analyse it):
    ``--module`` when the file holds several modules, ``--layer all`` for a unidirectional
    stack (layer 0 of a bidirectional one, whose stack is not causal), ``--direction`` for
    two directions, ``--cell`` when the file cannot say which cell. One line, shell-quoted."""
    words = ["gateflow", "decay", "--weights", str(path)]
    for old, new in (rename or {}).items():  # the names the modules were found under
        words += ["--map", f"{old}={new}"]
    if several:
        words += ["--module", model.module]
    if model.layers > 1:
        words += ["--layer", "0" if model.bidirectional else "all"]
    if model.bidirectional:
        words += ["--direction", "forward"]
    if model.cell is None:
        words += ["--cell", model.cells[0]]
    return command_line(*words)


def inspect_model(path, *, json_path=None, overwrite: bool = False,
                  quiet: bool = False, rename=None) -> list[dict]:
    """List the recurrent modules of ``path`` (a table on stdout unless quiet or the JSON
    goes there); with ``json_path``, also write them as JSON (``-`` for stdout). Returns
    one dict per module (:meth:`Recurrent.summary` plus its ``command``).

    What the reader skipped is listed too (``"skipped"`` in the JSON, ``skipped:`` lines
    after the table); when nothing was found but something was skipped, the skipped lines
    are printed and a :class:`GateflowError` names them (exit 2 on the command line)."""
    out = None if json_path is None else check_file(json_path, "JSON", overwrite=overwrite)
    found = find_models(path, rename=rename)
    models = tuple(found)
    skipped = tuple(getattr(found, "skipped", ()))
    if not models and skipped:
        if not quiet:
            from gateflow.presentation._console import console, skipped_lines

            console(stderr=False).print(skipped_lines(skipped), soft_wrap=True,
                                        highlight=False)
        raise GateflowError(f"{label(Path(str(path)))}: found no recurrent module gateflow "
                            f"can read; skipped {skipped_summary(skipped)}")
    rows = [{**m.summary(), "command": decay_command(path, m, len(models) > 1, rename)}
            for m in models]
    if out is not None:
        doc = {"format": "gateflow-inspect", "format_version": 2, "file": str(path),
               "modules": rows, "skipped": list(skipped)}
        write_files({out: (json.dumps(doc, indent=1) + "\n").encode()}, overwrite=overwrite)
    if not quiet and out != STDOUT:
        from gateflow.presentation._console import console, modules_report

        screen = console(stderr=False)
        for part in modules_report(Path(str(path)).name, rows, skipped, width=screen.width):
            table = hasattr(part, "columns")  # lines: one at any width, never cut
            screen.print(part, soft_wrap=not table, crop=False, highlight=False)
        if out is not None:  # a message, not data: stderr
            console().print(f"wrote {out}", highlight=False, soft_wrap=True)
    return rows
