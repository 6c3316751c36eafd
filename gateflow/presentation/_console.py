"""What the jobs print while they run: one progress bar, the decay tables, number formats.

All three jobs (``decay``, ``report``, ``sweep``) show progress with :func:`progress`, on
stderr, so stdout carries only data (``--json -``) or the path written.

Nothing printed here is read as rich markup, and nothing from outside gateflow reaches the
terminal unescaped: every table cell, title, caption, progress description, note and
"wrote" line is a ``rich.text.Text`` (never parsed: a module named ``[/]``, a cell
``lstm[gate=hard_sigmoid(0.2,0.5)]`` or a file ``[red]x.json`` prints as it is), made by
:func:`text` from :func:`gateflow._text.safe` (control characters as visible escapes) and
elided in the middle when very long. A pipe that breaks under the console is an error
(``BrokenPipeError``, one line from the command line), not rich's silent exit 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from gateflow._errors import as_given
from gateflow._text import WORD_LIMIT, elide, one_line, safe
from gateflow.analysis._analysis import EXPLODING, VANISHING, ChainFits
from gateflow.numeric._result import ChainResult
from gateflow.presentation import _numbers as num
from gateflow.presentation._labels import direct_label

if TYPE_CHECKING:  # rich and the Lyapunov spectra are imported where they are used
    from rich.table import Table
    from rich.text import Text

    from gateflow.numeric._lyapunov import LyapunovResult

__all__ = ["Bar", "console", "fit_table", "fmt_efold", "fmt_horizon", "fmt_r2", "line",
           "lyapunov_table", "modules_report", "progress", "say", "skipped_lines",
           "summary_table", "text", "whole_numbers", "wrote"]


def text(value, style: str | None = None, limit: int | None = WORD_LIMIT):
    """``value`` as a rich Text that is never read as markup: control characters escaped
    (:func:`gateflow._text.safe`), elided in the middle past ``limit`` characters (None:
    never). For a table cell, a title, a name."""
    from rich.text import Text

    shown = safe(value)
    return Text(shown if limit is None else elide(shown, limit), style=style or "")


def line(value, style: str | None = None):
    """``value`` as one printable line (:func:`gateflow._text.one_line`), a rich Text."""
    from rich.text import Text

    return Text(one_line(value), style=style or "")


def fmt_horizon(fit, T: int) -> str:
    """A memory horizon: the lag; when the curve stays above the threshold at every lag
    measured (k ≤ T), ``"none"`` for a vanishing curve and ``"not reached"`` for one that
    does not vanish (an exploding curve is never long memory). Never ``"> T"``: nothing is
    said of the lags beyond T; the table's caption says what these mean."""
    if fit.horizon is not None:
        return f"{fit.horizon}"
    return "none" if fit.regime == VANISHING else "not reached"


def fmt_efold(fit) -> str:
    """An e-folding lag, for a vanishing curve only; what the curve does otherwise."""
    return num.steps(fit.efold, style="plain") if fit.efold is not None else f"— ({fit.regime})"


def fmt_r2(fit) -> str:
    return num.r2(fit.r2, style="plain")


def _console_class():
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich would point stdout at the null device and exit 1 without a word: the
            # command line says it in one line instead (exit 2)
            self.quiet = True
            raise BrokenPipeError(32, "broken pipe")

    return _Console


def console(*, stderr: bool = True, quiet: bool = False):
    """A rich Console (stderr by default); with ``NO_COLOR`` set (https://no-color.org), no
    colour and no other style either: plain text. A broken pipe raises
    ``BrokenPipeError``."""
    import os

    cls = _console_class()
    if os.environ.get("NO_COLOR"):
        return cls(stderr=stderr, quiet=quiet, color_system=None)
    return cls(stderr=stderr, quiet=quiet)


def say(message: str) -> None:
    """One line on stderr (a ``note:`` or ``warning:``), never wrapped or cropped, whatever
    the terminal's width: a line a person may copy stays one line. Escaped and bounded
    (:func:`gateflow._text.one_line`): a note may quote a name read from a file."""
    from rich.text import Text

    shown = one_line(message)
    head, sep, rest = shown.partition(": ")
    style = {"warning": "yellow", "note": "dim"}.get(head) if sep else None
    out = Text.assemble((head + sep, style or ""), rest) if style else Text(shown)
    console().print(out, soft_wrap=True, highlight=False)


def wrote(screen, paths) -> None:
    """``wrote <path>``, one line per file written, on ``screen`` (a :func:`console`): the
    path as it is, never markup (``[red]x.json``), its control characters escaped."""
    for p in paths:
        screen.print(line(f"wrote {safe(p)}"), soft_wrap=True, highlight=False)


class Bar:
    """A handle on one progress bar: :meth:`set` the steps done, or :meth:`advance`; the
    screen is refreshed at most about 200 times over the whole bar. Quiet: does nothing."""

    def __init__(self, progress=None, task=None, total: int = 1):
        self._progress, self._task, self.total = progress, task, max(1, int(total))
        self._every = max(1, self.total // 200)
        self.done = 0
        self._shown = 0

    def set(self, done: int, description: str | None = None) -> None:
        self.done = int(done)
        if self._progress is None:
            return
        if description is not None or self.done >= self.total \
                or self.done - self._shown >= self._every:
            kw = {} if description is None else {"description": description}
            self._progress.update(self._task, completed=self.done, **kw)
            self._shown = self.done

    def advance(self, steps: int = 1, description: str | None = None) -> None:
        self.set(self.done + steps, description)


class _Described(Bar):
    """A bar whose descriptions are escaped and bounded like every printed line."""

    def set(self, done: int, description: str | None = None) -> None:
        super().set(done, None if description is None
                    else one_line(description, limit=WORD_LIMIT))


@contextmanager
def progress(description: str, total: int, *, quiet: bool = False,
             transient: bool = False) -> Iterator[Bar]:
    """One progress bar on stderr: description, bar, done/total, elapsed and remaining
    time. ``transient`` removes it when done; ``quiet`` shows nothing."""
    screen = None if quiet else console()
    if screen is None or (transient and not screen.is_terminal):
        # a transient bar off a terminal would leave only a stray empty line behind
        yield Bar(total=total)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=screen, transient=transient) as bar:
        task = bar.add_task(one_line(description, limit=WORD_LIMIT), total=total)
        yield _Described(bar, task, total)


# -- gateflow decay's tables ----------------------------------------------------------------
#: A table's frame: one border left of every column, one at the right end, one space of
#: padding either side of every cell (rich's default box and padding).
_FRAME, _PER_COLUMN = 1, 3


def _digits(text: str) -> int:
    """The longest word of ``text`` that holds a digit (a number, ``×0.95``, ``-inf``)."""
    return max((len(w) for w in str(text).split() if any(c.isdigit() for c in w)
                or w in ("-inf", "inf", "nan")), default=0)


def _plain(cell) -> str:
    return cell if isinstance(cell, str) else getattr(cell, "plain", "")


def whole_numbers(table, width: int | None = None, whole: tuple[str, ...] = ()):
    """``table`` with every number kept whole: text that does not fit folds onto the next
    line (a header, a long name) instead of being cut with "…", and no column is narrower
    than the longest number (or name with a digit: ``h_l1/h_l0``) in it. With ``width``
    (the console's), the columns are narrowed to fit it, widest first, each down to that
    minimum; a table that cannot fit even so is made wider than the console, to be printed
    with ``crop=False`` (the terminal folds its lines; nothing is lost). Columns whose
    header is in ``whole`` (labels such as ``∏ diag(1 − f_t)``) keep each cell on one line.
    Returns the table."""
    columns = table.columns
    least, word, headed, natural = [], [], [], []
    for column in columns:
        cells = [_plain(c) for c in column.cells]
        longest = max((len(w) for c in cells for w in c.split()), default=1)
        numbers = max((_digits(c) for c in cells), default=0)
        header = max((len(w) for w in _plain(column.header).split()), default=1)
        least.append(max(numbers, min(longest, 4), min(header, 3), 1))
        word.append(max(longest, numbers, min(header, 4), 1))
        headed.append(max(word[-1], header))
        natural.append(max([len(_plain(column.header)), *map(len, cells), 1]))
        if _plain(column.header) in whole:
            numbers = max(map(len, cells), default=numbers)
            least[-1] = word[-1] = headed[-1] = max(numbers, headed[-1])
        column.overflow = "fold"
        column.min_width = numbers or None
    if width is None:
        return table
    frame = _FRAME + _PER_COLUMN * len(columns)
    widths = list(natural)
    if sum(widths) + frame <= width:
        return table
    # narrowest first: text wraps between words, then headers fold, then words fold; the
    # widest column gives way first at each stage
    for floor in (headed, word, least):
        while sum(widths) + frame > width:
            slack = [i for i, w in enumerate(widths) if w > floor[i]]
            if not slack:
                break
            widths[max(slack, key=lambda i: widths[i])] -= 1
    for column, w in zip(columns, widths):
        column.width = w
    table.width = max(width, sum(widths) + frame)
    return table


def _spread(values: list[int], count: int) -> list[int]:
    """``count`` of ``values``, evenly spread, the first and last always among them."""
    if count >= len(values):
        return values
    if count <= 1:
        return values[-1:]
    step = (len(values) - 1) / (count - 1)
    return sorted({values[round(i * step)] for i in range(count)})


#: A block across a stack's layers, "h_l1/h_l0" (or "h_l1/y_l0"): what it means is said.
_CROSS = re.compile(r"_l(\d+)/\w+_l(?!\1\b)\d+\b")


def _caption(inputs: bool, cross: bool) -> str | None:
    """What the rows mean: the lag convention, the input blocks', and (a stack) which of
    the two meanings of a cross-layer block each name is."""
    parts = (["for an input block X/x, ∂X_T/∂x_{T−k} (x_T is k = 0, x_0 does not exist)"]
             if inputs else [])
    if cross:
        parts.append("X/h_lj is carried (h_lj perturbed as it is carried into the next step, "
                     "as a restart gives); X/y_lj is what a hook on layer j's output at "
                     "T−k sees (layer j+1's same-step read included, k = 0..T−1)")
    return "k: ∂X_T/∂Y_{T−k}; " + "; ".join(parts) if parts else None


def summary_table(result: ChainResult, max_lags: int = 6, width: int | None = None) -> Table:
    """A rich Table: batch-mean log10 norms of every block of a result at a few lags
    (at most ``max_lags``, spread from k = 1 to T; fewer when ``width`` columns cannot hold
    them whole: a number is never cut)."""
    from rich.table import Table

    T = result.shapes["T"]
    lags = sorted({k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
                   if k <= T} | {T})
    inputs = set(result.inputs)
    series = list(result.series())

    def shown(name: str, a, k: int) -> str:
        first = 0 if name in inputs else 1  # an input block's index is its lag
        if k - first >= len(a):
            return ""
        row = a[k - first]
        mean = -np.inf if np.isneginf(row).all() else np.mean(row[np.isfinite(row)])
        return num.fixed(mean, 3, style="plain")

    count = min(max_lags, len(lags))
    if width is not None:
        names = max((len(n) for n, _, _ in series), default=5)
        norms = max((len(nm) for _, nm, _ in series), default=4)
        number = max((len(shown(n, a, k)) for n, _, a in series for k in lags), default=6)
        number = max(number, len(f"k={T}"))
        room = width - _FRAME - (max(names, 5) + _PER_COLUMN) - (max(norms, 4) + _PER_COLUMN)
        count = max(1, min(count, room // (number + _PER_COLUMN)))
    lags = _spread(lags, count)
    sizes = ", ".join(f"{k}={v}" for k, v in result.shapes.items() if k not in ("T", "B", "d"))
    table = Table(title=line(f"{result.cell.name}: mean log10 norm over the batch "
                             f"(T={T}, B={result.shapes['B']}, {sizes})", "table.title"),
                  caption=_caption(bool(inputs), any(_CROSS.search(n) for n, _, _ in series)))
    table.add_column("block", style="bold cyan", no_wrap=True)
    table.add_column("norm", no_wrap=True)
    for k in lags:
        table.add_column(f"k={k}", justify="right", no_wrap=True)
    for name, norm, a in series:
        table.add_row(text(name), norm, *(shown(name, a, k) for k in lags))
    return whole_numbers(table, width)


def fit_table(fits: Mapping[str, ChainFits], steps: Mapping[str, int], threshold: float,
              width: int | None = None) -> Table:
    """A rich Table: per cell, its memory block's and direct product's regime, per-step
    factor, R², e-folding lag (vanishing curves only) and memory horizon, both in steps.
    ``fits``: cell -> :class:`ChainFits`; ``steps``: cell -> T. One cell is named in the
    title, several in a first column. Numbers are never cut (:func:`whole_numbers`)."""
    from rich.table import Table

    norms = {f.norm for f in fits.values()}
    one = next(iter(fits)) if len(fits) == 1 else None
    table = Table(title=line(f"{one + ': ' if one else ''}fitted decay of the batch median "
                             f"({'/'.join(sorted(norms))} norm; e-folding lag and memory "
                             f"horizon in steps; memory horizon: first lag below "
                             f"{num.given(threshold, style='plain')})", "table.title"))
    if one is None:
        table.add_column("cell", style="bold cyan")
    table.add_column("block")
    for h in ("regime", "factor per step", "R²", "e-folding", "horizon"):
        table.add_column(h, justify="right")
    for cell, cf in fits.items():
        head = () if one else (text(cell),)
        rows = [*cf.blocks.items(), *((direct_label(cf.cell, s), f) for s, f in cf.direct.items())]
        if not cf.blocks:
            table.add_row(*head, "(memory block not measured)", "—", "—", "—", "—", "—")
        for name, f in rows:
            style = "bold red" if f.regime == EXPLODING else None
            table.add_row(*head, text(name), f.regime,
                          f"×{num.factor(f.factor, style='plain')}",
                          fmt_r2(f), fmt_efold(f),
                          fmt_horizon(f, steps[cell]), style=style)
    table.caption = ("lines fitted over every lag with a finite norm; exploding, neutral and "
                     "non-monotone curves get no e-folding lag; horizon none (or not reached): "
                     "above the threshold at every lag measured")
    return whole_numbers(table, width, whole=("cell", "block"))


def skipped_lines(skipped) -> Text:
    """``skipped: ...``, one line for each thing a model file's reader skipped."""
    from rich.text import Text

    return Text("\n".join(one_line(f"skipped: {what}") for what in skipped), style="yellow")


def modules_report(name: str, rows: list[dict], skipped=(), width: int | None = None
                   ) -> list:
    """``gateflow inspect``'s output, as renderables to print one after the other: a table
    (one row per recurrent module of a file; numbers never cut), then for each module a
    ``#`` line (what and where it is, how it reads its inputs) and its ``gateflow decay``
    command alone on the next line, then notes: what gateflow assumed about a module
    (:attr:`Recurrent.assumed`), what the reader skipped. Every line but the table's is
    meant to be printed with ``soft_wrap=True``: one line at any width, so that a command
    pasted runs as printed."""
    from rich.table import Table

    table = Table(title=line(f"{name}: {len(rows)} recurrent module(s)", "table.title"))
    for col in ("module", "kind", "cell", "layers", "directions", "n", "d", "proj"):
        table.add_column(col, style="bold cyan" if col == "module" else None,
                         justify="right" if col in ("layers", "n", "d", "proj") else "left")
    out: list = [table]
    for r in rows:
        cell = r["cell"] or " or ".join(r["cells"]) + f" (give {as_given('cell')})"
        table.add_row(text(r["module"] or "''"), text(f"{r['framework']} {r['kind']}"),
                      text(cell, limit=None), str(r["layers"]), ", ".join(r["directions"]),
                      str(r["hidden"]), str(r["input"]), str(r["proj"] or "-"))
        what = r["module"] or r["kind"]
        layout = r.get("layout", "unknown")
        about = [f"{r['framework']} {r['kind']}"]
        if r.get("where"):
            about.append(r["where"])
        about.append({"time-major": "inputs (T, B, d)", "batch-major": "inputs (B, T, d)"}
                     .get(layout, "inputs: the file does not say (read as (T, B, d))"))
        out.append(line(f"# {what}: {'; '.join(about)}", "dim"))
        # the command whole (it is shell-quoted: control characters are already \-escapes
        # inside $'...'), so that it runs as printed
        out.append(text(r["command"], "green", limit=None) if r["command"]
                   else line(f"# not analysed: {r['note']}", "yellow"))
    if not rows:
        table.caption = "no nn.RNN/LSTM/GRU, *Cell, ONNX or Keras recurrent module found"
    for r in rows:
        label = r["module"] or r["kind"]
        if r["note"] and r["command"]:
            out.append(line(f"note ({label}): {r['note']}", "dim"))
        out += [line(f"note ({label}): {said}", "dim") for said in r.get("assumed", ())]
    if any(r.get("layout", "unknown") == "unknown" for r in rows):
        out.append(line("note: where the file does not say the inputs' axis order, gateflow "
                        f"decay reads {as_given('inputs')} time-major (T, B, d) and says so; "
                        f"add {as_given('batch_first')} for (B, T, d)", "dim"))
    if skipped:
        out.append(skipped_lines(skipped))
    whole_numbers(table, width)
    return out


def lyapunov_table(res: LyapunovResult, width: int | None = None) -> Table:
    """The largest Lyapunov exponents (median over the batch), the sum of the positive ones
    and the Kaplan–Yorke dimension."""
    from rich.table import Table

    table = Table(title=line(f"{res.cell.name}: Lyapunov exponents (natural log per step)",
                             "table.title"))
    table.add_column("i", justify="right")
    table.add_column("λ_i", justify="right")
    table.add_column("e-folding (steps)", justify="right")
    med = np.median(res.exponents, axis=0)
    for i, v in enumerate(med[:8], start=1):
        efold = "—" if not np.isfinite(v) or v == 0 else (
            f"{num.steps(-1 / v, style='plain')} (contracting)" if v < 0
            else f"{num.steps(1 / v, style='plain')} (growing)")
        table.add_row(str(i), num.fixed(v, 5, style="plain"), efold)
    table.caption = (f"median over {res.exponents.shape[0]} sequences; T = {res.steps} steps, "
                     f"transient {res.transient}, K = {res.k} of N = {res.state_dim}; "
                     "sum of positive exponents "
                     f"{num.sig(np.median(res.positive_sum), style='plain')}; "
                     "Kaplan–Yorke dimension "
                     f"{num.sig(np.median(res.kaplan_yorke), style='plain')}"
                     + (f"; {res.k - 8} more in {as_given('json_path')}" if res.k > 8
                        else ""))
    return whole_numbers(table, width)
