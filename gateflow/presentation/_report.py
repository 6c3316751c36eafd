"""The pages of ``gateflow report``: index.md and one self-contained index.html, both
rendered from the same Jinja2 templates (``templates/``) and the same context
(:func:`~gateflow.presentation._report_context.report_context`), built once from the
report's data — the very dict saved as ``data.json`` — so that every number the pages
state is a number of that file.

Text travels as *inline markup*: plain words with ``$…$`` LaTeX. The Markdown page keeps
it as it is (GitHub renders ``$…$`` and ``$$…$$``); the HTML page escapes the words and
typesets the LaTeX as MathML (latex2mathml; browsers render MathML natively, so the page
needs no script, no font and no network).

Layout of ``templates/``::

    report.j2          the content, once: sections, prose, tables, figures, formulas
    html/page.j2       the HTML shell (inline CSS from html/report.css)
    html/macros.j2     h, p, table, figure, equations, files: as HTML
    md/page.j2         the Markdown shell
    md/macros.j2       the same macros, as Markdown

:func:`render_report` renders both pages; :func:`render_page` one of them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import TYPE_CHECKING

from gateflow.presentation._report_context import report_context

if TYPE_CHECKING:  # the figures are drawn by the job; here only their captions and SVG
    from gateflow.presentation._figures import ReportFigure

__all__ = ["mathml", "render_page", "render_report"]

#: The pages :func:`render_report` writes, by template folder.
PAGES = ("md", "html")


_MATH = re.compile(r"\$([^$]+)\$")


@cache
def mathml(tex: str, display: str = "inline") -> str:
    """LaTeX -> MathML (latex2mathml), checked: a construct it cannot typeset is an
    error here, not a red box on the page."""
    from latex2mathml.converter import convert

    out = convert(tex, display=display)
    if "<merror" in out or "<mi>&</mi>" in out:
        raise ValueError(f"latex2mathml cannot typeset {tex!r}")
    # HTML puts <math> in the MathML namespace by itself: no URL left in the page
    return out.replace(' xmlns="http://www.w3.org/1998/Math/MathML"', "", 1)


def _inline_html(value):
    """Inline markup -> HTML: words escaped (unless the template already did), ``$…$`` as
    MathML."""
    from markupsafe import Markup, escape

    text = " ".join(str(escape(value)).split())
    out, pos = [], 0
    for m in _MATH.finditer(text):
        out += [text[pos:m.start()], mathml(Markup(m.group(1)).unescape())]
        pos = m.end()
    return Markup("".join([*out, text[pos:]]))


def _display_html(tex: str):
    from markupsafe import Markup

    return Markup(mathml(str(tex), "block"))


def _inline_md(value) -> str:
    return " ".join(str(value).split())


def _cell_md(text: str) -> str:
    """A Markdown table cell: GFM splits cells at any "|" not escaped, and ``\\|`` reads as
    an escaped backslash then a split, so LaTeX's norm bars become ``\\Vert`` and a bare
    "|" is escaped."""
    return text.replace("\\|", "\\Vert ").replace("|", "\\|")


def _display_md(tex: str) -> str:
    return f"$$\n{tex}\n$$"


def _svg_data_uri(svg: str) -> str:
    """The figure's SVG as a data URI: the page carries it, and nothing it holds (ids,
    styles) can clash with the page or another figure."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


@cache
def _environment(page: str):
    """The Jinja2 environment of one page kind: HTML autoescapes, Markdown does not; both
    load the same template tree."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    html = page == "html"
    env = Environment(loader=PackageLoader("gateflow.presentation", "templates"),
                      autoescape=html, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["inline"] = _inline_html if html else _inline_md
    env.filters["display"] = _display_html if html else _display_md
    env.filters["data_uri"] = _svg_data_uri
    env.filters["cell"] = _cell_md
    return env


def render_page(context: Mapping[str, object], page: str) -> str:
    """One page (``"md"`` or ``"html"``) of the report from its context."""
    text = _environment(page).get_template("report.j2").render(**context, page=page)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_report(data: Mapping, figures: Iterable[ReportFigure] = ()) -> tuple[str, str]:
    """(index.md, index.html) of the report from its ``data`` (as saved in data.json) and
    its figures (:class:`~gateflow.presentation._figures.ReportFigure`)."""
    context = report_context(data, figures)
    return render_page(context, "md"), render_page(context, "html")
