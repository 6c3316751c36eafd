"""The on-disk cache of compiled evaluators: used across processes, keyed by the equations."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from gateflow import CELLS, all_lags, init_params, make_inputs
from gateflow._compile import _cache_path, compile_cell, get_dtype


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", str(tmp_path))
    compile_cell.cache_clear()
    yield tmp_path
    compile_cell.cache_clear()


def _run(cell="gru"):
    p = init_params(cell, 5, 3, scheme="gaussian", sigma_w=1.2, seed=0)
    return all_lags(cell, p, make_inputs(9, 2, 3, seed=1)).blocks


def test_second_process_uses_the_cache_and_gets_the_same_numbers(cache):
    fresh = _run()
    (entry,) = list(cache.glob("gru-numpy-float64-*.json"))
    assert json.loads(entry.read_text())["format"] == 1
    compile_cell.cache_clear()  # as a new process would
    mtime = entry.stat().st_mtime_ns
    cached = _run()
    assert entry.stat().st_mtime_ns == mtime  # read, not rewritten
    for block, norms in fresh.items():
        for key, value in norms.items():
            np.testing.assert_array_equal(cached[block][key], value)


def test_key_changes_with_the_equations(cache):
    lstm = CELLS["lstm"]
    altered = replace(lstm, equations=(*lstm.equations[:4], "c = f*c_prev + 2*i*g", "h = o*tanh(c)"))
    dt = get_dtype("float64")
    assert _cache_path(lstm, "numpy", dt) != _cache_path(altered, "numpy", dt)
    assert _cache_path(lstm, "numpy", dt) != _cache_path(lstm, "numpy", get_dtype("float32"))


def test_corrupt_entry_is_rebuilt(cache):
    _run()
    (entry,) = list(cache.glob("gru-*.json"))
    entry.write_text("{ not json")
    compile_cell.cache_clear()
    _run()
    assert json.loads(entry.read_text())["format"] == 1


def test_empty_setting_disables_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", "")
    monkeypatch.chdir(tmp_path)
    compile_cell.cache_clear()
    try:
        _run("rnn")
        assert _cache_path(CELLS["rnn"], "numpy", get_dtype("float64")) is None
        assert not any(tmp_path.iterdir())
    finally:
        compile_cell.cache_clear()
