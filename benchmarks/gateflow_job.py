"""gateflow's contender in the benchmark: the job as a user runs it, in a fresh process.

    python benchmarks/gateflow_job.py WEIGHTS.npz INPUTS.npy OUT.npy DTYPE BACKEND

Reads the weights (PyTorch names) and the inputs the peers read, computes
``log10 ‖∂c_T/∂c_{T−k}‖_F`` for every lag (LSTM, block ``c/c``, Frobenius norm only) and
saves the (T, B) array with ``np.save``, as ``benchmarks/peers.py`` does, so that every
contender pays the same for its output.
"""

import sys

import numpy as np

import gateflow as gf


def main(argv: list[str]) -> int:
    weights, inputs, out, dtype, backend = argv
    params = gf.load_params(weights, "lstm", dtype=dtype)
    x = gf.load_inputs(inputs, dtype=dtype)
    res = gf.all_lags("lstm", params, x, blocks=("c/c",), norms=("frobenius",), dtype=dtype,
                      backend=backend)
    np.save(out, res.blocks["c/c"]["log10_frobenius"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
