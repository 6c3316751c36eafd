"""Packaging: one version source, the licence, ``py.typed``, the project's metadata files,
what git ignores, where the compile cache lives, and (slow) the wheel and the sdist built by
``python -m build``, installed into a fresh virtual environment and run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

import gateflow
from gateflow.numeric import _compile

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# -- the version -----------------------------------------------------------------------------
def test_one_version_source():
    """pyproject.toml has no version of its own: hatch reads gateflow/_version.py, the only
    place that writes one, and the installed metadata says the same."""
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "gateflow/_version.py"
    writers = [p.relative_to(ROOT).as_posix() for p in (ROOT / "gateflow").rglob("*.py")
               if re.search(r"^__version__\s*=", p.read_text(), re.M)]
    assert writers == ["gateflow/_version.py"]
    assert version("gateflow") == gateflow.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", gateflow.__version__)


# -- licence, typing marker, metadata files ---------------------------------------------------
def test_license_is_mit_and_declared():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 gateflow developers" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text
    project = _pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]


def test_package_is_marked_typed():
    assert (ROOT / "gateflow" / "py.typed").is_file()
    assert "Typing :: Typed" in _pyproject()["project"]["classifiers"]


def test_project_urls_classifiers_and_test_extra():
    project = _pyproject()["project"]
    home = "https://github.com/gateflow/gateflow"
    assert project["urls"]["Homepage"] == project["urls"]["Repository"] == home
    assert project["urls"]["Issues"] == f"{home}/issues"
    assert all(url.startswith(home) for url in project["urls"].values())
    assert {"Intended Audience :: Science/Research", "Environment :: Console"} \
        <= set(project["classifiers"])
    assert any(re.fullmatch(r"build>=1\.2", dep) for dep in project["optional-dependencies"]
               ["test"])
    for dep in ("platformdirs", "jinja2", "latex2mathml"):
        assert any(d.startswith(dep) for d in project["dependencies"]), dep


def test_citation_file_is_cff_1_2_0():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert doc["cff-version"] == "1.2.0"
    assert doc["version"] == gateflow.__version__
    assert doc["license"] == "MIT" and doc["type"] == "software"
    assert doc["authors"] == [{"name": "gateflow developers"}]
    assert doc["repository-code"] == "https://github.com/gateflow/gateflow"
    assert doc["title"] and doc["message"]
    allowed = {"abstract", "authors", "cff-version", "commit", "contact", "date-released",
               "doi", "identifiers", "keywords", "license", "license-url", "message",
               "preferred-citation", "references", "repository", "repository-artifact",
               "repository-code", "title", "type", "url", "version"}  # CFF 1.2.0's keys
    assert set(doc) <= allowed


def test_changelog_has_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "[Keep a Changelog](https://keepachangelog.com/en/1.1.0/)" in text
    assert re.search(rf"^## \[{re.escape(gateflow.__version__)}\]", text, re.M)
    assert re.search(rf"^\[{re.escape(gateflow.__version__)}\]: https://", text, re.M)
    assert "### Added" in text


# -- what git ignores ------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "ignored"), [
    ("reports/2026-01-02_n64-T200-seed0/index.html", True),  # gateflow report's default --out
    ("reports/2026-01-02_n64-T200-seed0-2/data.json", True),
    ("reports/sweep-20260102-120000/heatmaps.png", True),  # gateflow sweep's default --out
    ("reports/_scratch/notes.md", True),
    ("reports/example/index.md", False),  # committed
    ("reports/example/decay_cells.png", False),
    ("reports/benchmarks.md", False),
    ("reports/benchmarks-gpu.md", False),
    ("reports/benchmarks-lyapunov.md", False),
    ("dist/gateflow-0.1.0-py3-none-any.whl", True),
    ("build/lib/gateflow/cli/__init__.py", True),
    (".mypy_cache/3.11/x.json", True),
    ("gateflow/cli/_app.py", False),
])
def test_generated_outputs_are_ignored(path, ignored):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    p = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode in (0, 1), p.stderr
    assert (p.returncode == 0) == ignored


# -- the compile cache's folder --------------------------------------------------------------
def test_cache_folder_setting_comes_first(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _compile.cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", "")
    assert _compile.cache_dir() is None  # empty: no cache at all


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux cache folders")
def test_cache_folder_is_the_users_cache_folder(tmp_path, monkeypatch):
    """Without $GATEFLOW_CACHE_DIR: platformdirs' user cache folder, which on Linux is
    $XDG_CACHE_HOME/gateflow, else ~/.cache/gateflow (a fake home here)."""
    from platformdirs import user_cache_dir

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("GATEFLOW_CACHE_DIR")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert _compile.cache_dir() == home / ".cache" / "gateflow"
    assert _compile.cache_dir() == Path(user_cache_dir("gateflow", appauthor=False))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _compile.cache_dir() == tmp_path / "xdg" / "gateflow"


# -- the built distributions (slow) ----------------------------------------------------------
def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a program in the fresh venv: nothing that points at this
    checkout or this venv, a fake home, no compile cache."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    return {**env, "HOME": str(home), "GATEFLOW_CACHE_DIR": "", "MPLBACKEND": "Agg",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", **extra}


def _run(cmd, *, cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"{cmd}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def _tiny_report(venv: Path, work: Path, env: dict) -> None:
    """``gateflow --version``, ``python -m gateflow --version`` and the smallest
    ``gateflow report`` with the installed package, from a folder outside the checkout."""
    work.mkdir()
    where = _run([venv / "bin" / "python", "-c", "import gateflow; print(gateflow.__file__)"],
                 cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not the checkout
    assert _run([venv / "bin" / "gateflow", "--version"], cwd=work, env=env).stdout \
        == f"gateflow {gateflow.__version__}\n"
    assert _run([venv / "bin" / "python", "-m", "gateflow", "--version"], cwd=work,
                env=env).stdout == f"gateflow {gateflow.__version__}\n"
    p = _run([venv / "bin" / "gateflow", "report", "--hidden", "4", "--steps", "8", "--batch",
              "2", "--input-size", "2", "-q"], cwd=work, env=env, timeout=600)
    (page,) = (work / "reports").glob("*_n4-T8-seed0/index.html")
    assert p.stdout == f"{page.relative_to(work)}\n"  # the path is all that goes to stdout
    assert (page.parent / "index.md").is_file() and (page.parent / "data.json").is_file()


@pytest.mark.slow
def test_wheel_and_sdist_install_into_a_fresh_venv_and_run(tmp_path):
    """``python -m build`` writes an sdist and, from it, a wheel; each holds the licence and
    ``py.typed``; each installs into a fresh virtual environment (dependencies from the
    package index) and runs ``gateflow report``."""
    pytest.importorskip("build")
    home = tmp_path / "home"
    home.mkdir()
    env = _clean_env(home, PIP_CACHE_DIR=str(tmp_path / "pip-cache"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", dist, ROOT], cwd=tmp_path, env=env)
    name = f"gateflow-{gateflow.__version__}"
    (wheel,) = dist.glob(f"{name}-py3-none-any.whl")
    (sdist,) = dist.glob(f"{name}.tar.gz")

    with zipfile.ZipFile(wheel) as z:
        files = set(z.namelist())
        meta = z.read(f"{name}.dist-info/METADATA").decode()
    assert {"gateflow/py.typed", "gateflow/__main__.py", "gateflow/cli/__init__.py",
            f"{name}.dist-info/licenses/LICENSE"} <= files
    assert not any("__pycache__" in f or f.startswith("tests/") for f in files)
    assert "License-Expression: MIT" in meta and "License-File: LICENSE" in meta
    assert "Project-URL: Homepage, https://github.com/gateflow/gateflow" in meta
    assert "Classifier: Typing :: Typed" in meta
    assert re.search(r"^Requires-Dist: platformdirs", meta, re.M)

    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "CITATION.cff", "pyproject.toml",
            "PKG-INFO", "gateflow/py.typed", "gateflow/_version.py"} <= members
    assert not any(m.startswith(("reports/", ".git/", "dist/")) for m in members)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env)
    pip = [venv / "bin" / "python", "-m", "pip"]
    _run([*pip, "install", wheel], cwd=tmp_path, env=env)
    _tiny_report(venv, tmp_path / "from-wheel", env)

    _run([*pip, "uninstall", "-y", "gateflow"], cwd=tmp_path, env=env)
    _run([*pip, "install", sdist], cwd=tmp_path, env=env)  # built here from the sdist
    _tiny_report(venv, tmp_path / "from-sdist", env)
