"""``gateflow inspect FILE``: every recurrent module of a model file, and the exact
``gateflow decay`` command that analyses each. Orchestration only: the formats find the
modules (:func:`gateflow.models._model.find_models`), the console draws the table.

A printed command is one line at any terminal width, every word shell-quoted
(:func:`shlex.quote`: a path with spaces, a module or cell name with brackets), so that
pasting it runs it as printed. A word with a character a terminal would act on (an escape
sequence in a node name, a file name that is not UTF-8) is written in ANSI-C quotes,
``$'evil\\x1b[2J.pt'`` (bash, zsh, ksh): the terminal sees only printable text and the shell
still gets the very bytes. A file in which nothing was found but something was skipped
(a subgraph not opened, an unknown op, arrays no vocabulary matched) is an error, exit 2,
after the skipped lines: "nothing found" is never said when something was skipped.

What is said was done: the JSON (``--json``) is staged first, the table printed next, and
the file moved into place last, so an interrupted or failing run (a closed pipe, Ctrl-C
while printing) leaves no file, and "wrote" is printed only for a file that is there.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path

from gateflow._errors import GateflowError
from gateflow._io import STDOUT, check_file, staged_files
from gateflow._text import has_unsafe
from gateflow.models._model import find_models, skipped_summary
from gateflow.models.formats._files import label
from gateflow.models.formats._recurrent import Recurrent

__all__ = ["command_line", "decay_command", "inspect_model", "shell_word"]


def shell_word(word) -> str:
    """``word`` quoted for a POSIX shell (:func:`shlex.quote`), or, when it holds a
    character a terminal would act on, in ANSI-C quotes with every such byte as ``\\xHH``
    (undecodable file-name bytes included): printable, and the same bytes to the shell."""
    word = os.fsdecode(word) if isinstance(word, bytes) else str(word)
    if not has_unsafe(word):
        return shlex.quote(word)
    out = []
    for ch in word:
        if ch in "\\'":
            out.append("\\" + ch)
        elif has_unsafe(ch):
            try:
                raw = os.fsencode(ch)  # an undecodable file-name byte is that byte again
            except UnicodeError:
                raw = ch.encode("utf-8", "surrogatepass")
            out += [f"\\x{b:02x}" for b in raw]
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def command_line(*words) -> str:
    """``words`` as one shell command line, each quoted where the shell needs it
    (:func:`shell_word`)."""
    return " ".join(shell_word(w) for w in words)


def decay_command(path, model: Recurrent, several: bool, rename=None, *,
                  flag_of: Callable[[str], str]) -> str | None:
    """The ``gateflow decay`` command for ``model`` (None when gateflow cannot analyse it):
    the module when the file holds several modules, layer ``all`` for a unidirectional
    stack (layer 0 of a bidirectional one, whose stack is not causal), the direction for
    two directions, the cell when the file cannot say which. Each option is written as
    ``flag_of(parameter)`` says (the command line's table of its ``decay`` flags: this
    layer knows parameters, not flags). One line, shell-quoted."""
    words = ["gateflow", "decay", flag_of("weights"), str(path)]
    for old, new in (rename or {}).items():  # the names the modules were found under
        words += [flag_of("rename"), f"{old}={new}"]
    if several:
        words += [flag_of("module"), model.module]
    if model.layers > 1:
        words += [flag_of("layer"), "0" if model.bidirectional else "all"]
    if model.bidirectional:
        words += [flag_of("direction"), "forward"]
    if model.cell is None:
        words += [flag_of("cell"), model.cells[0]]
    return command_line(*words)


def inspect_model(path, *, flag_of: Callable[[str], str], json_path=None,
                  overwrite: bool = False, quiet: bool = False, rename=None) -> list[dict]:
    """List the recurrent modules of ``path`` (a table on stdout unless quiet or the JSON
    goes there); with ``json_path``, also write them as JSON (``-`` for stdout). Returns
    one dict per module (:meth:`Recurrent.summary` plus its ``command``, the ``gateflow
    decay`` line with the flags ``flag_of`` gives each parameter: :func:`decay_command`).

    What the reader skipped is listed too (``"skipped"`` in the JSON, ``skipped:`` lines
    after the table); when nothing was found but something was skipped, the skipped lines
    are printed and a :class:`GateflowError` names them (exit 2 on the command line)."""
    out = None if json_path is None else check_file(json_path, "JSON", overwrite=overwrite,
                                                    inputs={"model": path})
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
    rows = [{**m.summary(),
             "command": decay_command(path, m, len(models) > 1, rename, flag_of=flag_of)}
            for m in models]
    payloads = {}
    if out is not None:
        doc = {"format": "gateflow-inspect", "format_version": 2, "file": str(path),
               "modules": rows, "skipped": list(skipped)}
        payloads[out] = (json.dumps(doc, indent=1) + "\n").encode()
    show = not quiet and out != STDOUT
    with staged_files(payloads, overwrite=overwrite):  # moved into place after the table
        if show:
            from gateflow.presentation._console import console, modules_report

            screen = console(stderr=False)
            for part in modules_report(Path(str(path)).name, rows, skipped,
                                       width=screen.width):
                table = hasattr(part, "columns")  # lines: one at any width, never cut
                screen.print(part, soft_wrap=not table, crop=False, highlight=False)
            screen.file.flush()  # a closed pipe fails here, before the file is placed
    if show and out is not None:  # a message, not data: stderr
        from gateflow.presentation._console import console, wrote

        wrote(console(), [out])
    return rows
