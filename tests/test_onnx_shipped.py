"""Real ONNX models as they ship: the Silero VAD models inside the ``silero-vad`` wheel
(``pip install --no-deps silero-vad``; skipped without it, nothing of the package is
imported or run). Their LSTMs sit in nested ``If`` branches, with weights made by Slice,
Concat and Unsqueeze of top-level constants; one variant holds a hand-written cell.

Each LSTM's W, R and B are computed here by ONNX's reference evaluator from the model's own
nodes (the chain that feeds the LSTM, traced by name through the enclosing graphs), not by
gateflow; a float64 autograd reference built from those raw arrays with the ONNX equations
then checks gateflow's decay over the weights the reader returns, every block at every lag.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import AttributeProto  # noqa: E402

from gateflow.models.formats import _onnx  # noqa: E402
from tests._onnx_ref import assert_decay_matches  # noqa: E402
from tests._shipped_ref import weights_from_constants as raw_weights  # noqa: E402


def silero_files() -> Path:
    spec = importlib.util.find_spec("silero_vad")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("silero-vad is not installed (pip install --no-deps silero-vad)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def scan(path: Path):
    with open(path, "rb") as fh:
        return _onnx.scan(fh, path.stat().st_size, path)


def lstm_nodes(graph, chain=()):
    """Every LSTM node with the graphs that enclose it (outermost first)."""
    for node in graph.node:
        if node.op_type == "LSTM":
            yield node, (*chain, graph)
        for a in node.attribute:
            if a.type == AttributeProto.GRAPH:
                yield from lstm_nodes(a.g, (*chain, graph))


MODELS = {  # file -> (its LSTM modules, where the first sits)
    "silero_vad.onnx": (4, "If node 'If_0', then-branch > If node "
                           "'If_0_then_branch__Inline_0__/decoder/If_1', then-branch"),
    "silero_vad_16k_op15.onnx": (2, "If node '/model/decoder/If_1', then-branch"),
    "silero_vad_16k_sequence.onnx": (1, ""),
    "silero_vad_half.onnx": (2, "If node '/decoder/If_1', then-branch"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_silero_vad_lstms_match_autograd(name):
    pytest.importorskip("torch")
    path = silero_files() / name
    if not path.exists():
        pytest.skip(f"this silero-vad release does not ship {name}")
    found = scan(path)
    count, where = MODELS[name]
    assert found.skipped == ()
    assert len(found.modules) == count and found.modules[0].where == where
    model = onnx.load(str(path))
    nodes = {node.name: (node, chain) for node, chain in lstm_nodes(model.graph)}
    x = np.random.default_rng(0).normal(0, 1.0, (5, 1, 128))
    for rec in found:
        assert (rec.cell, rec.hidden, rec.input, rec.layout) == ("lstm", 128, 128, "time-major")
        # the state is carried from call to call (a graph input, through If nodes): the
        # analysis starts from zeros, and says so
        assert len(rec.assumed) == 2 and rec.initial is None
        for state, line in zip(("initial_h", "initial_c"), rec.assumed):
            assert re.fullmatch(rf"{state} is not a constant of the file \((the output of \w+ "
                                r"node '[^']+'|'\w' is a graph input, fed at run time)\): the "
                                r"analysis starts from zeros unless s0 gives the initial "
                                r"state", line), line
        node, chain = nodes[rec.module.split(":")[-1]]
        arrays = raw_weights(model, node, chain)
        assert assert_decay_matches(rec, "LSTM", arrays, x) >= 4 * 5


def test_silero_vad_hand_written_cell_is_said():
    """The If-less variant computes its LSTM with Gemm, Sigmoid and Tanh and passes the state
    from call to call: nothing is read, and the file says why instead of being empty."""
    path = silero_files() / "silero_vad_op18_ifless.onnx"
    if not path.exists():
        pytest.skip("this silero-vad release does not ship silero_vad_op18_ifless.onnx")
    found = scan(path)
    assert found.modules == ()
    assert found.skipped == (
        "graph input 'state' and output 'stateN' have the same shape [2, batch, 128]: the "
        "model may carry a state from one call to the next (a recurrence written as plain "
        "operators, with Gemm, Relu, Sigmoid, Tanh), which gateflow does not read as a cell",)
