"""Test-session settings: nothing touches the real home or cache.

Compiled evaluators are cached in a temporary folder, and ``$HOME`` points at a fake home
inside it, so no test reads or writes the user's real files. The ``sandbox`` fixture gives a
case its own working directory and fake home.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_ROOT = tempfile.mkdtemp(prefix="gateflow-test-")
_CACHE = os.path.join(_ROOT, "cache")
_HOME = os.path.join(_ROOT, "home")
os.makedirs(_HOME)
os.environ.setdefault("GATEFLOW_CACHE_DIR", _CACHE)
os.environ["HOME"] = _HOME
os.environ.pop("XDG_CACHE_HOME", None)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Path:
    """A fresh working directory with a fake ``$HOME`` inside; returns the working dir."""
    work = tmp_path / "work"
    home = tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return work
