"""Sphinx configuration of gateflow's documentation site.

Build (strict, as CI does: ``.ci/docs``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The job pages (``docs/jobs/*.md``) and the theory page are MyST notebooks and the
notebooks in ``notebooks/`` are linked into ``docs/notebooks/``: all of them are executed
at build time, so every command, formula and figure on the site is what this checkout of
gateflow really prints. A cell that raises fails the build. The site works offline:
MathJax is served from ``_static/mathjax`` (sphinx-mathjax-offline), no CDN is referenced.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from sphinx.ext.napoleon import GoogleDocstring

import gateflow

DOCS = Path(__file__).resolve().parent

# -- Project -----------------------------------------------------------------------------

project = "gateflow"
author = "gateflow developers"
copyright = "gateflow developers"
release = version = gateflow.__version__

# -- General -----------------------------------------------------------------------------

extensions = [
    "myst_nb",  # MyST Markdown and notebooks (sets up myst_parser itself)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # gateflow's docstrings use Google-style "Args:" sections
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax: no CDN
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# Strict: every cross-reference must resolve (CI adds -W --keep-going).
nitpicky = True
# There are no offline inventories of these projects (intersphinx would need the network),
# so references to their types in signatures and docstrings cannot resolve; gateflow's own
# names must.
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|numpy\.typing|npt|pathlib|os|collections\.abc|typing|types|"
               r"concurrent|sympy|sp|torch|matplotlib|dask|distributed|threading|"
               r"contextlib|enum|dataclasses|io)(\..*)?"),
    (r"py:class", r"(ArrayLike|NDArray|PathLike|Path|Callable|Iterable|Iterator|Mapping|"
                  r"Sequence|Any|Figure|Axes|Expr|Symbol|ndarray)"),
]
# gateflow's public docstrings that name private objects, which this site does not
# document. Each is a known gap, listed so that any *new* broken reference fails the build;
# remove an entry once its docstring names the object as a literal (``NORMS``) instead
# of a cross-reference, or once the object is public.
nitpick_ignore = [
    ("py:data", "gateflow.numeric._observers.NORMS"),  # plot_decay
    ("py:class", "gateflow.cells._record.System"),  # Cell.system's annotation
    ("py:class", "gateflow.cells._record.MatVecAtom"),  # Structure.wrt's annotation
    ("py:class", "gateflow.jobs._sweep.SweepResult"),  # sweep's annotation (no docstring)
    ("py:class", "gateflow.analysis._analysis.ChainFits"),  # Analysis
    ("py:func", "gateflow.cells._stack.output_blocks"),  # all_lags
    ("py:func", "gateflow._text.one_line"),  # GateflowError
]

# -- MyST and MyST-NB --------------------------------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# "cache": a page or notebook is executed again only when its code changed; the cache lives
# in the build folder (docs/_build/.jupyter_cache), and .ci/docs starts without one.
nb_execution_mode = "cache"
nb_execution_timeout = 300  # seconds per cell; the slowest cell (notebook 02) takes ~15 s
nb_execution_raise_on_error = True  # a cell that raises fails the build
nb_execution_show_tb = True  # ... and its traceback is in the build log
nb_execution_excludepatterns: list[str] = []
nb_merge_streams = True
nb_ipywidgets_js: dict[str, dict[str, str]] = {}  # never load widget scripts from a CDN
nb_render_markdown_format = "myst"  # Markdown outputs: tables and $math$

# -- Autodoc -----------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
autodoc_default_options = {"undoc-members": True}
autosummary_generate = False  # the API pages list their objects themselves: no stubs
# gateflow's docstrings are Google style ("Args:") for functions and classes, and plain
# prose for properties and attributes. Napoleon would read a property's "Weight matrices:
# ..." as "type: description", so its own handler is off and _google (below) applies it
# to everything but attributes.
napoleon_google_docstring = False
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# -- HTML --------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"gateflow {release}"
html_static_path = ["_static"]
html_css_files = ["gateflow.css"]
html_show_sourcelink = False
html_last_updated_fmt = None

# -- The kernel the pages run in ---------------------------------------------------------


def _kernelspec(app) -> None:
    """A ``python3`` kernel that is *this* interpreter, put first on ``JUPYTER_PATH``.

    A fresh virtual environment has no kernelspec of its own, and a user-level
    ``python3`` kernelspec may point at another Python; this one cannot. Its environment
    gives the pages inline figures (whatever ``MPLBACKEND`` the caller exported, e.g.
    ``Agg`` in CI) and puts ``docs/_ext`` (the pages' helpers, ``gfdocs``) on the path."""
    root = Path(app.outdir).parent / ".jupyter"
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    path = [str(DOCS / "_ext"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--InteractiveShell.colors=nocolor"],  # plain tracebacks in the build log
        "display_name": "Python 3 (gateflow docs)",
        "language": "python",
        "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline",
                "PYTHONPATH": os.pathsep.join(path)},
    }, indent=1))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(root), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))])


# -- Docstrings --------------------------------------------------------------------------

_LITERAL = re.compile(r"(``.*?``)")


def _absolute_values(app, what, name, obj, options, lines: list[str]) -> None:
    """gateflow's docstrings write math in Unicode, absolute values included (``|φ'| ≤ γ``),
    which reStructuredText would read as substitution references: escape every ``|``
    outside inline literals, except on the lines of a table."""
    for i, line in enumerate(lines):
        if "|" not in line or line.lstrip().startswith(("|", "+")):
            continue
        lines[i] = "".join(part if part.startswith("``") else part.replace("|", r"\|")
                           for part in _LITERAL.split(line))


#: A lone ``*`` before a name is a glob (``*Cell``: nn.RNNCell, nn.LSTMCell, …), not the
#: start of an emphasis: no other ``*`` follows it on the line.
_GLOB = re.compile(r"(?<![\w*`\\])\*(?=\w)(?![^*]*\*)")


def _globs(app, what, name, obj, options, lines: list[str]) -> None:
    """gateflow's docstrings name families of classes with a glob (``*Cell``), which
    reStructuredText would read as an unterminated emphasis: escape such a ``*`` outside
    inline literals."""
    for i, line in enumerate(lines):
        if "*" not in line:
            continue
        lines[i] = "".join(part if part.startswith("``") else _GLOB.sub(r"\\*", part)
                           for part in _LITERAL.split(line))


def _google(app, what, name, obj, options, lines: list[str]) -> None:
    if what not in ("attribute", "property", "data"):
        lines[:] = GoogleDocstring(lines, app.config, app, what, name, obj, options).lines()


def _short_names(app, env, node, contnode):
    """gateflow's docstrings name the objects of their own module briefly
    (``:class:`Captured```, in ``gateflow.models._captured``): resolve such a name to the
    one documented Python object whose full name ends with it, if there is exactly one."""
    if node.get("refdomain") != "py" or not node.get("reftarget"):
        return None
    py = env.get_domain("py")
    target = node["reftarget"].lstrip("~.")
    found = [name for name in py.objects if name.endswith("." + target)]
    if len(found) != 1:
        return None
    return py.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], found[0],
                           node, contnode)


def setup(app):
    app.connect("builder-inited", _kernelspec)
    app.connect("autodoc-process-docstring", _google)
    app.connect("autodoc-process-docstring", _absolute_values)
    app.connect("autodoc-process-docstring", _globs)
    app.connect("missing-reference", _short_names)
