"""The on-disk cache of compiled evaluators: used across processes, keyed by the equations."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from gateflow import CELLS, all_lags, init_params, make_inputs
from gateflow._compile import _cache_path, _compile


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", str(tmp_path))
    _compile.cache_clear()
    yield tmp_path
    _compile.cache_clear()


def _run(cell="gru"):
    p = init_params(cell, 5, 3, scheme="gaussian", sigma_w=1.2, seed=0)
    return all_lags(cell, p, make_inputs(9, 2, 3, seed=1)).blocks


def test_second_process_uses_the_cache_and_gets_the_same_numbers(cache):
    fresh = _run()
    (entry,) = list(cache.glob("gru-numpy-*.json"))
    assert json.loads(entry.read_text())["format"] == 1
    _compile.cache_clear()  # as a new process would
    mtime = entry.stat().st_mtime_ns
    cached = _run()
    assert entry.stat().st_mtime_ns == mtime  # read, not rewritten
    for block, norms in fresh.items():
        for key, value in norms.items():
            np.testing.assert_array_equal(cached[block][key], value)


def test_key_changes_with_the_equations(cache):
    lstm = CELLS["lstm"]
    altered = replace(lstm, equations=(*lstm.equations[:4], "c = f*c_prev + 2*i*g",
                                       "h = o*tanh(c)"))
    assert _cache_path(lstm, "numpy") != _cache_path(altered, "numpy")
    assert _cache_path(lstm, "numpy") != _cache_path(lstm, "cupy")


def test_corrupt_entry_is_rebuilt(cache):
    _run()
    (entry,) = list(cache.glob("gru-*.json"))
    entry.write_text("{ not json")
    _compile.cache_clear()
    _run()
    assert json.loads(entry.read_text())["format"] == 1


def test_empty_setting_disables_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", "")
    monkeypatch.chdir(tmp_path)
    _compile.cache_clear()
    try:
        _run("rnn")
        assert _cache_path(CELLS["rnn"], "numpy") is None
        assert not any(tmp_path.iterdir())
    finally:
        _compile.cache_clear()
