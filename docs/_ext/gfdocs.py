"""Helpers for the executed pages of gateflow's documentation (not part of gateflow).

The job pages are MyST notebooks: their code cells run at build time, in a kernel that
imports this module (``docs/_ext`` is on its ``PYTHONPATH``, see ``docs/conf.py``). Every
command shown on a page is really run, and its real output is what the page shows; a
command that exits with another status than the page expects fails the build.

* :func:`setup` moves the kernel into a fresh scratch folder, so the files a page's
  commands write (``out.json``, ``model.pt``, report folders) never land in the checkout;
* :func:`sh` runs one ``gateflow …`` command line and shows it as a console session;
* :func:`show_latex` displays what ``gateflow derive --format latex`` prints, as math.
"""

from __future__ import annotations

import atexit
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from IPython.display import Markdown, Math, display

#: How wide the command line's tables are drawn (rich reads ``COLUMNS`` off a terminal).
COLUMNS = 88
_COLOUR = {"FORCE_COLOR", "CLICOLOR_FORCE", "CLICOLOR", "PY_COLORS", "TTY_COMPATIBLE"}

WORK: Path | None = None


def setup() -> Path:
    """Make a scratch folder (removed when the kernel exits) and change into it."""
    global WORK
    if WORK is None:
        WORK = Path(tempfile.mkdtemp(prefix="gateflow-docs-"))
        atexit.register(shutil.rmtree, WORK, True)
    os.chdir(WORK)
    return WORK


def _argv(args: list[str]) -> list[str]:
    # `gateflow …` runs this kernel's own gateflow, whatever PATH says.
    if args and args[0] == "gateflow":
        return [sys.executable, "-m", "gateflow.cli", *args[1:]]
    return args


def run(command: str, status: int = 0, columns: int = COLUMNS) -> str:
    """Run ``command`` (stdout and stderr together, as a terminal shows them) and return
    its output; raise if it exits with another status than ``status``."""
    # A kernel exports FORCE_COLOR, CLICOLOR_FORCE and a colour TERM for its own output;
    # a command's output on a page is plain text, as in a pipe.
    env = {k: v for k, v in os.environ.items() if k not in _COLOUR}
    env.update(COLUMNS=str(columns), NO_COLOR="1", TERM="dumb")
    proc = subprocess.run(_argv(shlex.split(command)), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=env, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != status:
        raise RuntimeError(f"`{command}` exited with status {proc.returncode}, the page "
                           f"expects {status}; its output:\n{proc.stdout}")
    lines = [line.rstrip() for line in proc.stdout.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _prompt(command: str) -> str:
    """``$ command``, broken before options with ``\\`` where it would not fit."""
    lines = [f"$ {command.split(' -')[0]}"]
    for part in re.findall(r" (-.*?)(?= -|$)", command):
        if len(lines[-1]) + len(part) + 3 > COLUMNS:
            lines[-1] += " \\"
            lines.append(f"    {part}")
        else:
            lines[-1] += f" {part}"
    return "\n".join(lines)


def sh(command: str, status: int = 0, head: int | None = None, tail: int | None = None,
       since: str | None = None, show_status: bool = False,
       columns: int = COLUMNS) -> None:
    """Run one command line and display it with its output as a console session.

    ``since`` keeps the output from the first line that contains it; ``head``/``tail``
    keep only the first/last lines of a long output (an elided line says so);
    ``show_status`` adds the exit status (``echo $?``) below the output; ``columns`` is
    the terminal width the command sees."""
    out = run(command, status, columns).splitlines()
    if since is not None:
        first = next(i for i, line in enumerate(out) if since in line)
        out = ([f"… ({first} lines above)"] if first else []) + out[first:]
    if head is not None and len(out) > head:
        out = out[:head] + [f"… ({len(out) - head} more lines)"]
    if tail is not None and len(out) > tail:
        out = [f"… ({len(out) - tail} lines above)"] + out[-tail:]
    text = "\n".join([_prompt(command), *out])
    if show_status:
        text += f"\n$ echo $?\n{status}"
    fence = "````" if "```" in text else "```"
    display(Markdown(f"{fence}console\n{text}\n{fence}"))


def show_latex(tex: str, jacobians_only: bool = False) -> None:
    """Display LaTeX as ``gateflow derive --format latex`` prints it: one aligned block at
    a time (its ``%`` comment lines are for ``.tex`` files). ``jacobians_only`` skips the
    first block, the cell's equations."""
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    blocks = [block for block in body.split("\n\n") if block.strip()]
    for block in blocks[1:] if jacobians_only else blocks:
        display(Math(block))
