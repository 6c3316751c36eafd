"""Test-session settings: compiled evaluators are cached in a temporary folder, not ~/.cache."""

from __future__ import annotations

import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="gateflow-test-cache-")
os.environ.setdefault("GATEFLOW_CACHE_DIR", _CACHE)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)
