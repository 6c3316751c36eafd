"""The ``gateflow`` command line: a thin Typer shell over the library. No math lives here.

Every command parses its options and calls one library function. Heavy modules (SymPy
printing, plotting, CuPy, torch) are imported inside the command that needs them, so
``gateflow --help`` stays fast. ``python -m gateflow`` runs the same app (``__main__.py``).

Conventions, for every command:

* data (``--json -``, ``--csv -``, derivations, the listings of ``cells`` and ``inspect``,
  the path of a written report) goes to stdout; progress bars, tables of results and
  messages go to stderr;
* a fixed set of values is an Enum built from the registry that owns it (init schemes,
  input distributions, dtypes, backends, directions), so ``--help`` lists the choices and
  shell completion (``--install-completion``) offers them; names are case-insensitive
  (``derive LSTM``); comma-separated lists (``--cell rnn,lstm``, ``--norms``) complete item
  by item;
* ``--help`` groups options into panels (model, inputs, generated weights, outputs, run),
  one line per option where it fits; an option that several commands take is defined once
  (``_Weights``, ``_Inputs``, ``_Json``, ... in :mod:`gateflow.cli._options`), so it has
  one type and one wording; its default is read from the record that owns it
  (:class:`~gateflow.models._specs.InitSpec`, :class:`~gateflow.models._specs.InputSpec`,
  :class:`~gateflow.jobs._report.ReportConfig`, …), so ``--help`` shows the value the job
  uses and no default is written twice;
* a command's parameter is named as the job's parameter (``json_path`` for ``--json``,
  ``rename`` for ``--map``): the library's messages name parameters
  (:func:`gateflow._errors.arg`), and the command line writes each as its flag, from one
  table read from the option declarations (:func:`gateflow.cli._options.flags`);
* how an ``--inputs`` file's axes are read follows the model unless ``--batch-first`` or
  ``--time-major`` says it, and the run says so in one ``note:`` line;
* ``NO_COLOR`` (set and not empty) turns off colour everywhere (rich honours it), and in
  help and the command line's own tables every other text style too.

Errors and signals are handled once, for every command, by :class:`GateflowGroup` (the
app's ``cls``):

* a :class:`gateflow.GateflowError` raised anywhere below a command becomes one line
  ``error: <message>`` on stderr and exit status 2, with no traceback, each parameter
  the message names written as this command's flag (``layer`` → ``--layer``); so does an
  ``OSError`` or ``MemoryError`` from the machine (a full disk, a memory cap). Usage errors
  (a bad option value such as ``--format foo``) are one such line too, exit 2, and an
  unknown choice names the closest ones;
* Ctrl-C (SIGINT) and SIGTERM unwind the command like an exception, so staged files and
  folders are removed and nothing partial is left: one line ``error: interrupted`` and exit
  status 130 (SIGINT) or 143 (SIGTERM). The line says what was written when the signal
  came after an output was committed. Before and after a command (start-up, the
  interpreter's exit) the handlers of :mod:`gateflow._interrupt`, installed first thing,
  end the process with the same line and status; a second signal while the first one
  cleans up is not raised again (see :mod:`gateflow._interrupt`);
* a closed standard output, or a pipe whose reader has gone, is an error before any work
  (one line, exit 2), and a pipe that breaks during the run is one too;
* every line printed is one line of bounded length with every name, path and value that
  came from outside escaped (:mod:`gateflow._text`): a file's names cannot drive the
  terminal, and rich never reads them as markup.

A new command needs nothing special: ``@app.command()`` is enough.

The package: :mod:`._app` (the app, the command classes, errors, usage, signals),
:mod:`._options` (choices, panels, shared options, the parameter → flag table, the records
built from the options), :mod:`._commands` (``cells``, ``inspect``, ``derive``,
``sweep``), :mod:`._measure` (``decay``, ``lyapunov``, ``report``).
"""

from gateflow.cli import _commands, _measure  # noqa: F401, E402 - they register the commands
from gateflow.cli._app import app, main

__all__ = ["app", "main"]
