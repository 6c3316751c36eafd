"""Execute every notebook in ``notebooks/`` (small sizes via ``GATEFLOW_NB_SMALL=1``).

Run with nbclient rather than ``pytest --nbmake``: one test per notebook, a clear skip for
the PyTorch notebook when torch is missing. The kernel is always *this* interpreter: a
``python3`` kernelspec running ``sys.executable`` is written to a temporary folder put first
on ``JUPYTER_PATH``, so neither a fresh virtual environment (no ``ipykernel install``) nor a
user-level ``python3`` kernelspec pointing at another Python can change what runs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
NEEDS_TORCH = {"03-trained-pytorch-model.ipynb", "04-your-own-model.ipynb"}


def test_notebooks_found():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 3 and names[:3] == ["01-deriving-jacobians.ipynb",
                                              "02-decay-rnn-lstm-gru.ipynb",
                                              "03-trained-pytorch-model.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: outputs are committed; clear them before saving")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    if path.name in NEEDS_TORCH and importlib.util.find_spec("torch") is None:
        pytest.skip("needs PyTorch (pip install 'gateflow[torch]')")
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (gateflow tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("GATEFLOW_NB_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    assert client.kernel_name == "python3"
    client.execute()  # raises CellExecutionError, with the cell and traceback, on failure
