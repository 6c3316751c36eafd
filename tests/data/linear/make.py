"""Write the committed state dicts of the linear-recurrence packages and the norms their own
autograd gives (run by hand where every package is installed; needs torch and safetensors):

    python tests/data/linear/make.py

For each package, ``<package>.safetensors`` is the ``state_dict()`` of the small float64
modules that ``tests/test_linear_readers.py`` builds (its ``BUILDERS``: fixed seeds),
complex parameters stored as (real, imag) pairs on a last axis of 2 (``torch.view_as_real``:
safetensors keeps no complex128). ``<package>.ref.safetensors`` holds, per case, the cell's
inputs x (the inputs that recurrence sees, computed by the package's own layers), the initial
state s0, and the log10 Frobenius norms (T, B) of every state block (lags 1..T) and input
block (lags 0..T−1) by float64 autograd through the package's own step (``package_norms``);
its metadata names the package, its version and each case's module prefix and cell. Nothing
here comes from gateflow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/

import test_linear_readers as t  # noqa: E402


def main() -> None:
    import torch
    from safetensors.numpy import save_file

    for package, build in t.BUILDERS.items():
        b = build()
        version = t._version(package)
        sd = {}
        for k, v in b.root.state_dict().items():
            v = v.detach()
            sd[k] = np.ascontiguousarray((torch.view_as_real(v) if v.is_complex() else v).numpy())
        produced = {"package": package, "version": version, "torch": torch.__version__,
                    "by": "tests/data/linear/make.py"}
        save_file(sd, str(HERE / f"{package}.safetensors"),
                  metadata={"produced_by": json.dumps(produced)})
        ref, cases = {}, {}
        for case in b.cases:
            norms = t.package_norms(case, t._context(b))
            ref[f"{case.id}|x"] = np.ascontiguousarray(case.x)
            for blk, v in case.s0.items():
                ref[f"{case.id}|s0|{blk}"] = np.ascontiguousarray(v)
            for key, v in norms.items():
                ref[f"{case.id}|{key}"] = np.ascontiguousarray(v)
            cases[case.id] = {"prefix": case.prefix, "cell": case.cell, "kwargs": case.kwargs}
        save_file(ref, str(HERE / f"{package}.ref.safetensors"),
                  metadata={"cases": json.dumps(cases), "produced_by": json.dumps(produced)})
        print(f"{package} {version}: {len(sd)} arrays, {len(b.cases)} cases")


if __name__ == "__main__":
    main()
