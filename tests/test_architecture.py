"""The architecture is checked, not hoped for: the import-linter layers contract (no layer
imports a layer above it, function-level imports included, and so no cycles between
layers), the type checker, and a public API that notebooks and messages can name."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gateflow

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gateflow"


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it is part of the 'test' extra")
    return found


def test_layers_contract_is_kept():
    p = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "gateflow layers KEPT" in p.stdout


def test_type_checker_is_clean():
    p = subprocess.run([_tool("mypy"), "--no-incremental"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Success: no issues found" in p.stdout


def test_no_module_imports_itself_back():
    """No import cycle between any two modules, function-level imports included (imports
    for type checkers only do not run, so they do not count)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        mod = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps = graph.setdefault(mod, set())
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", None) == "TYPE_CHECKING"
                       for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # annotations only: never executed
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.startswith("gateflow"):
                for alias in node.names:  # `from pkg import submodule` depends on the submodule
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists()
                             else node.module)
            elif isinstance(node, ast.ImportFrom) and node.level:
                pytest.fail(f"{mod}: relative import (use absolute gateflow.* imports)")
    gateflow_root = "gateflow"
    seen: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        if seen.get(m) == 1:
            raise AssertionError(" -> ".join(stack + [m]))
        if seen.get(m) == 2 or m not in graph or m == gateflow_root:
            return
        seen[m] = 1
        for d in sorted(graph[m] - {m}):
            visit(d, stack + [m])
        seen[m] = 2

    for m in sorted(graph):
        visit(m, [])


def test_notebooks_use_the_public_api_only():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        private = re.findall(r"gateflow(?:\.\w+)*\._\w+", code)
        assert not private, f"{nb.name} imports private modules: {private}"


def test_messages_name_no_private_module():
    """User-facing strings (error messages, help) never send users to gateflow._x."""
    for path in PACKAGE.rglob("*.py"):
        for _, value in _strings(ast.parse(path.read_text())):
            if " " in value:  # prose, not a path
                assert not re.search(r"gateflow(\.\w+)*\._[a-z]", value), \
                    f"{path.relative_to(ROOT)}: {value!r}"


def test_public_api_resolves():
    for name in gateflow.__all__:
        assert getattr(gateflow, name) is not None, name


def _strings(tree: ast.AST):
    """Every string constant of ``tree`` that is not a docstring, f-string parts included
    (``ast`` parses an f-string's literal parts as constants), with its line."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef,
                                    ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node.lineno, node.value


#: A command-line flag in text: ``--`` and a lowercase letter, not inside a word or ``---``.
_FLAG = re.compile(r"(?<![\w-])--[a-z]")


def _below_the_cli():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] != "cli":
            yield path, ast.parse(path.read_text())


def test_the_cli_detects_a_flag_in_a_string():
    """The check below finds a flag in a plain string, in an f-string's literal part and in
    a message built from both, and passes docstrings and ``---``."""
    code = ('"""Use --cell."""\nA = "give --cell NAME"\nB = f"{x} --layer {y}"\n'
            'C = "----- rule"\nD = "a-b--c"\n')
    found = [s for _, s in _strings(ast.parse(code)) if _FLAG.search(s)]
    assert found == ["give --cell NAME", " --layer "]


def test_no_flag_below_the_cli():
    """Flags are the command line's words: the layers below name parameters
    (:func:`gateflow._errors.arg`, ``as_given``) and the CLI writes each as its flag, from
    one table read from its own option declarations. No string below ``gateflow/cli/``
    (f-string parts included; docstrings, which document the command line, excepted)
    holds a ``--flag``."""
    bad = [f"{path.relative_to(ROOT)}:{line}: {text!r}" for path, tree in _below_the_cli()
           for line, text in _strings(tree) if _FLAG.search(text)]
    assert not bad, "\n".join(bad)


#: Where splitting on "/" is not a block name: Keras variable paths (``lstm/kernel:0``,
#: ``model/layer/cell/...``) in the Keras readers, and the parsing of ``X/Y`` itself.
_SPLITS_ALLOWED = {"cells/_block.py", "models/formats/_keras_vars.py",
                   "models/formats/_keras_layers.py"}


def test_blocks_are_parsed_once():
    """A block ``"X/Y"`` is parsed once, into a :class:`~gateflow.cells._block.Block`, and
    read below by ``.out``/``.wrt``: no ``.split("/")`` anywhere else in the package."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in _SPLITS_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("split", "rsplit", "partition", "rpartition") \
                    and node.args and isinstance(node.args[0], ast.Constant) \
                    and node.args[0].value == "/":
                bad.append(f"gateflow/{rel}:{node.lineno}")
    assert not bad, "\n".join(bad)


def test_errors_name_parameters_and_the_cli_names_flags():
    """A library error names the parameter (``layer``); the command line renders the same
    error with its flag, read from the option declarations (``rename`` is ``--map``,
    ``json_path`` is ``--json``), never by searching the text."""
    from typer.main import get_command

    from gateflow._errors import GateflowError, arg
    from gateflow.cli import app
    from gateflow.cli._options import flags

    err = GateflowError(f"{arg('layer')} 5 is out of range; see {arg('rename')}")
    assert str(err) == "layer 5 is out of range; see rename"
    assert (err.param, err.params) == ("layer", ("layer", "rename"))
    decay = get_command(app).get_command(None, "decay")  # type: ignore[attr-defined]
    table = flags(decay)
    assert {k: table[k] for k in ("layer", "rename", "json_path", "scheme", "dist")} == {
        "layer": "--layer", "rename": "--map", "json_path": "--json", "scheme": "--init",
        "dist": "--input-dist"}
    assert err.render(lambda p: table.get(p, p)) == "--layer 5 is out of range; see --map"


def test_every_module_is_small_enough_to_have_one_job():
    """Issue 19: every module has one job and stays under ~600 lines (a module that grows
    past it is split by job, as cli/, numeric/_compile and the ONNX reader were)."""
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 600} == {}
