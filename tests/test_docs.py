"""The documentation site (``docs/``) keeps up with the code, and stays offline.

Building the site is ``.ci/docs``'s job (it executes every page and notebook, minutes);
these checks are cheap and need no Sphinx: every command of the CLI has its page, every
public name is in the API reference, every notebook is rendered, and ``docs/conf.py``
loads nothing from the network.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
INDEX = DOCS / "index.md"


def _toctree_entries() -> set[str]:
    text = INDEX.read_text(encoding="utf-8")
    entries: set[str] = set()
    for body in re.findall(r"```\{toctree\}\n(.*?)```", text, flags=re.S):
        entries |= {line.strip() for line in body.splitlines()
                    if line.strip() and not line.strip().startswith(":")}
    return entries


def _conf_assignments() -> dict[str, ast.expr]:
    tree = ast.parse((DOCS / "conf.py").read_text(encoding="utf-8"))
    values: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    values[target.id] = node.value
    return values


def test_every_command_has_a_page():
    import typer.main

    from gateflow.cli import app

    commands = sorted(typer.main.get_command(app).commands)
    assert commands, "the CLI has no commands?"
    toctree = _toctree_entries()
    for name in commands:
        page = DOCS / "jobs" / f"{name}.md"
        assert page.is_file(), f"`gateflow {name}` has no page: add docs/jobs/{name}.md"
        assert f"jobs/{name}" in toctree, f"docs/jobs/{name}.md is not in docs/index.md"
        assert f'sh("gateflow {name}' in page.read_text(encoding="utf-8"), (
            f"docs/jobs/{name}.md never runs `gateflow {name}`")


def test_api_jobs_have_a_page():
    toctree = _toctree_entries()
    page = DOCS / "jobs" / "analyze.md"
    assert "jobs/analyze" in toctree
    text = page.read_text(encoding="utf-8")
    assert "gf.analyze(" in text and "gf.capture(" in text


def test_every_public_name_is_in_the_api_reference():
    import gateflow

    text = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. (?:auto\w+|py:data):: (?:gateflow\.)?(\w+)\s*$", text,
                                flags=re.M))
    missing = sorted(set(gateflow.__all__) - documented)
    assert not missing, f"public names missing from docs/api/index.md: {missing}"


def _groups_of_the_stub() -> dict[str, set[str]]:
    """The public API as ``gateflow/__init__.pyi`` declares it: group -> names."""
    import ast

    groups: dict[str, set[str]] = {}
    group = None
    stub = ROOT / "gateflow" / "__init__.pyi"
    lines = stub.read_text(encoding="utf-8").splitlines()
    for line in lines:
        found = re.match(r"# -- (.+?) -+$", line)
        if found:
            group = found.group(1)
        elif line.startswith("from ."):
            node = ast.parse(line).body[0]
            assert isinstance(node, ast.ImportFrom) and group is not None, line
            assert all(a.asname == a.name for a in node.names), f"re-export as itself: {line}"
            groups.setdefault(group, set()).update(a.name for a in node.names)
    return groups


def test_the_api_reference_groups_names_as_the_one_facade_list_does():
    """One list (the stub) declares the API; the reference's level sections (## …) hold
    exactly its groups' names, in its order, and the package exports exactly those."""
    import gateflow

    stub = _groups_of_the_stub()
    assert set().union(*stub.values()) == set(gateflow.__all__)
    text = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    sections = re.split(r"(?m)^## ", text)[1:]
    docs: dict[str, set[str]] = {}
    for sec in sections:
        title = sec.splitlines()[0].strip().casefold()
        names = set(re.findall(r"^\.\. (?:auto\w+|py:data):: (\w+)\s*$", sec, flags=re.M))
        if names:
            docs[title] = names
    assert list(docs) == list(stub), (list(docs), list(stub))
    assert docs == stub


def test_every_notebook_is_rendered():
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    toctree = _toctree_entries()
    for name in notebooks:
        link = DOCS / "notebooks" / name
        assert link.is_symlink() and link.resolve() == (ROOT / "notebooks" / name).resolve(), (
            f"docs/notebooks/{name} must be a symlink to ../../notebooks/{name}")
        assert f"notebooks/{Path(name).stem}" in toctree, f"{name} is not in docs/index.md"


def test_conf_loads_nothing_from_the_network():
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert not re.search(r"https?://|//cdn", conf), "docs/conf.py names a URL"
    values = _conf_assignments()
    extensions = ast.literal_eval(values["extensions"])
    assert "sphinx-mathjax-offline" in extensions  # MathJax served from _static/mathjax
    assert "mathjax_path" not in values  # the extension sets it to the local copy
    assert ast.literal_eval(values["nb_ipywidgets_js"]) == {}  # no widget scripts from a CDN
    assert "sphinx.ext.intersphinx" not in extensions  # inventories come from the network


def test_conf_is_strict():
    values = _conf_assignments()
    assert ast.literal_eval(values["nitpicky"]) is True
    assert ast.literal_eval(values["nb_execution_raise_on_error"]) is True
    assert ast.literal_eval(values["nb_execution_mode"]) in ("cache", "force")
    script = (ROOT / ".ci" / "docs").read_text(encoding="utf-8")
    assert "-W --keep-going -b html docs docs/_build/html" in script


@pytest.mark.parametrize("page", sorted(p.relative_to(DOCS).as_posix()
                                        for p in DOCS.rglob("*.md") if "_build" not in p.parts))
def test_pages_link_nothing_outside_the_site(page):
    # a page may cite other sites in prose, but never embed their scripts or styles
    text = (DOCS / page).read_text(encoding="utf-8")
    assert not re.search(r"<(script|link)[^>]*(src|href)=\"(https?:)?//", text)
