"""The on-disk cache of compiled evaluators: used across processes, keyed by the equations.

Hostile caches (tampered entries, foreign owners, loose permissions) are in
``test_hostile_cache.py``; this file checks the ordinary life of the cache."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest

import gateflow.numeric._compile as compile_module
from gateflow import CELLS, all_lags, init_params, make_inputs
from gateflow.cells._record import Cell
from gateflow.numeric._compile import (
    CACHE_FORMAT,
    _cache_path,
    _check_spec,
    _compile,
    _read_entry,
    _spec,
)


def use_cache(folder, monkeypatch):
    """Point the cache at ``folder``, as a new process would see it (nothing compiled or
    warned about yet); returns ``folder``."""
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", str(folder))
    monkeypatch.setattr(compile_module, "_warned", set())
    _compile.cache_clear()
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private, empty cache folder for one test."""
    yield use_cache(tmp_path, monkeypatch)
    _compile.cache_clear()


def _run(cell="gru"):
    p = init_params(cell, 5, 3, scheme="gaussian", sigma_w=1.2, seed=0)
    return all_lags(cell, p, make_inputs(9, 2, 3, seed=1)).blocks


def assert_same_numbers(got: dict, expected: dict) -> None:
    """Every block's every norm equal bit for bit."""
    assert got.keys() == expected.keys()
    for block, norms in expected.items():
        assert got[block].keys() == norms.keys()
        for key, value in norms.items():
            np.testing.assert_array_equal(got[block][key], value)


def test_second_process_uses_the_cache_and_gets_the_same_numbers(cache, capsys):
    fresh = _run()
    (entry,) = list(cache.glob("gru-numpy-*.json"))
    assert json.loads(entry.read_text())["format"] == CACHE_FORMAT == 4
    _compile.cache_clear()  # as a new process would
    mtime = entry.stat().st_mtime_ns
    cached = _run()
    assert entry.stat().st_mtime_ns == mtime  # read, not rewritten
    assert_same_numbers(cached, fresh)
    assert capsys.readouterr().err == ""  # a healthy cache is silent


def test_entries_are_private_and_verified(cache):
    _run("rnn")
    (entry,) = list(cache.glob("rnn-*.json"))
    assert entry.stat().st_mode & 0o777 == 0o600
    assert cache.stat().st_mode & 0o777 == 0o700
    assert json.loads(entry.read_text())["sha256"]
    assert _read_entry(entry)["format"] == CACHE_FORMAT


@pytest.mark.parametrize("name", sorted(CELLS))
def test_every_generated_plan_passes_the_whitelist(name):
    """The source whitelist admits exactly what lambdify writes for every built-in cell (or
    their entries would never be cached)."""
    _check_spec(_spec(CELLS[name], "numpy"))


def test_custom_cell_with_powers_and_quotients_is_cached(cache):
    cell = Cell(name="../odd/name", summary="t", reference="t", state=("h",),
                params=("W", "U", "b"),
                equations=("h = (1 + h_prev**2)**(1/3) * tanh(W @ x + U @ h_prev + b)/2",))
    path = _cache_path(cell, "numpy")
    assert path.parent == cache  # a cell's name never leaves the folder
    _check_spec(_spec(cell, "numpy"))


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
    assert json.loads(entry.read_text())["format"] == CACHE_FORMAT


def test_unwritable_folder_only_costs_the_cache(cache, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    cache.chmod(0o500)
    try:
        _run("rnn")
    finally:
        cache.chmod(0o700)
    assert not any(cache.iterdir())
    assert capsys.readouterr().err == ""


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


@pytest.mark.parametrize("name", sorted(CELLS))
def test_generated_source_is_lambdifys(name, monkeypatch):
    """gateflow writes its functions with SymPy's public printers (no lambdify internals);
    the text is exactly what lambdify would generate (so the numbers are the same)."""
    import inspect

    import sympy as sp

    def reference(args, expr, backend, cse=False):
        fn = sp.lambdify([sp.Symbol(a) for a in args], expr, cse=cse, docstring_limit=0,
                         modules=[compile_module._namespace(np), "numpy"])
        try:
            want = inspect.getsource(fn)
        except OSError:  # pragma: no cover - a SymPy without linecache registration
            pytest.skip("lambdify's source is not retrievable here")
        assert ours(args, expr, backend, cse) == want
        return want

    ours = compile_module._source
    monkeypatch.setattr(compile_module, "_source", reference)
    spec = _spec(CELLS[name], "numpy")
    _check_spec(spec)
    assert "lambdify" not in inspect.getsource(compile_module._spec)


@pytest.mark.parametrize("labels", [
    {"c": {"text": "f_t"}},  # a format missing
    {"c": {"text": "f_t", "latex": "f_t"}, "h": {"text": "x", "latex": "x"}},  # extra block
    {"c": {"text": "f_t\nrm -rf", "latex": "f_t"}},  # not one printable line
    {"c": {"text": "", "latex": "f_t"}},
    {"c": {"text": "f" * 201, "latex": "f_t"}},
    {"c": {"text": 1, "latex": "f_t"}},
    [],
])
def test_direct_labels_are_checked_like_the_rest_of_the_plan(labels):
    """The printed direct-path labels kept with a plan are plain, short, one-line strings
    for exactly the blocks with a direct path; anything else is refused (and rebuilt)."""
    spec = _spec(CELLS["lstm"], "numpy")
    assert spec["direct_labels"] == {"c": {"text": "f_t", "latex": "f_t"}}
    _check_spec(spec)
    with pytest.raises(ValueError, match="not a gateflow plan"):
        _check_spec({**spec, "direct_labels": labels})


def test_labels_need_no_sympy_on_a_cache_hit(tmp_path):
    """A second process prints ∏ diag(1 − f_t) for the MGU from the cached plan, without
    importing SymPy."""
    import os
    import subprocess
    import sys

    code = ("import sys; from gateflow.presentation._labels import direct_label; "
            "print(direct_label('mgu')); print('sympy' in sys.modules)")
    env = {**os.environ, "GATEFLOW_CACHE_DIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=120)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert first.stdout.splitlines() == ["∏ diag(1 − f_t)", "True"], first.stderr
    assert second.stdout.splitlines() == ["∏ diag(1 − f_t)", "False"], second.stderr
