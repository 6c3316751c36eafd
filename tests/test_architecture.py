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
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef,
                                        ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr)
                      and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and " " in node.value and id(node) not in docstrings:  # prose, not a path
                assert not re.search(r"gateflow(\.\w+)*\._[a-z]", node.value), \
                    f"{path.relative_to(ROOT)}: {node.value!r}"


def test_public_api_resolves():
    for name in gateflow.__all__:
        assert getattr(gateflow, name) is not None, name
