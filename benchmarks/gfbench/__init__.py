"""The benchmark behind ``benchmarks/run.py``, in four parts.

* :mod:`gfbench.results`  the settings and every result, as dataclasses
* :mod:`gfbench.harness`  timing in fresh processes, peak memory, best of N, BLAS threads,
  the machine (load average at the start and the end)
* :mod:`gfbench.cases`    what is measured: gateflow end to end, the JAX and PyTorch peers,
  the kernel against the BLAS ceiling, float32 accuracy, the memory row, the GPU section
* :mod:`gfbench.report`   the Markdown report (``reports/benchmarks.md``) and the console

The programs the harness runs in fresh processes are real files: ``benchmarks/peers.py``
(JAX, PyTorch), ``benchmarks/gateflow_job.py`` (gateflow) and :mod:`gfbench.peak` (the
wrapper that records a child's own peak memory).
"""
