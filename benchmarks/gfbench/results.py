"""The benchmark's settings and results, as dataclasses (typed fields, no string keys).

Times are seconds, memory MiB. A contender that has no time has a reason instead (``why``:
"skipped (not installed)", "timed out", "failed (rc=1): ..."); the report prints it in the
time's place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Shape:
    """Hidden size n, batch B, sequence length T of one measurement."""

    n: int
    B: int
    T: int

    @property
    def label(self) -> str:
        return f"n={self.n} B={self.B} T={self.T}"


@dataclass(frozen=True)
class Settings:
    """What the command line asked for, as the cases need it."""

    repeats: int  # best of this many runs
    slow: float  # a fresh process slower than this (s) is not repeated
    timeout: float  # per fresh process (s)
    seed: int
    quick: bool = False
    gpu_cpu_steps: int = 16  # steps of the CPU reference at the GPU shape, then scaled
    # (run.py passes --gpu-cpu-steps, default cases.GPU_CPU_STEPS = 16)
    gpu_cpu_threads: int = 0  # its BLAS threads; 0: the library's own setting (all cores)


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ChildRun:
    """One fresh process: exit code, wall time from outside, its own peak memory."""

    rc: int
    wall: float
    rss_mib: float
    rss_how: str  # "VmHWM" (the child's own) or "ru_maxrss" (an upper bound)
    stdout: str
    stderr: str
    timed_out: bool

    @property
    def why(self) -> str:
        """Why it gave no result, in one line."""
        if self.timed_out:
            return "timed out"
        lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        return f"failed (rc={self.rc}): {lines[-1][:160] if lines else 'no message'}"


@dataclass(frozen=True)
class Timing:
    """A contender end to end: best wall time of ``runs`` fresh processes, largest peak
    memory, and the (T, B) log10 norms it wrote."""

    wall: float
    rss_mib: float
    rss_how: str
    runs: int
    result: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class Failed:
    """A contender that gave no result."""

    why: str


@dataclass(frozen=True)
class Ceiling:
    """The BLAS ceiling: the kernel's own GEMMs alone (dense) and the stacked alternative."""

    dense: float  # s: 2 × (B, n, n) @ (B, n, n) per step, T steps
    stacked: float  # s: one (B·n × 4n) @ (4n × n) per step, T steps
    dense_flops: float  # 4·B·n³·T
    stacked_flops: float  # 8·B·n³·T


@dataclass(frozen=True)
class KernelRun:
    """gateflow's ``all_lags`` in process (None if it failed) and the ceiling beside it."""

    kernel: float | None
    ceiling: Ceiling
    result: np.ndarray | None = field(repr=False, compare=False)


@dataclass(frozen=True)
class PeerStatus:
    """Whether a peer framework imports here, and its version or why not."""

    name: str  # "jax" or "torch"
    version: str | None
    why: str | None = None


# --------------------------------------------------------------------------- rows


@dataclass
class SizeRow:
    """One hidden size: every contender end to end, the kernel, the ceiling, agreement."""

    shape: Shape
    e2e: dict[str, Timing] = field(default_factory=dict)  # contender -> its best run
    why: dict[str, str] = field(default_factory=dict)  # contender -> why it has no time
    kernel: float | None = None
    ceiling: Ceiling | None = None
    diff: dict[str, float] = field(default_factory=dict)  # "torch", "jax vs torch" -> max |Δ|
    reference: np.ndarray | None = field(default=None, repr=False)  # the float64 log10 norms

    @property
    def rss_hows(self) -> set[str]:
        return {t.rss_how for t in self.e2e.values()}


@dataclass
class Float32Row:
    """gateflow in float32 at one size: end to end, kernel, and its error vs float64."""

    shape: Shape
    e2e: Timing | None
    why: str | None
    kernel: float | None
    ceiling: Ceiling
    diff_vs_f64: float  # max |Δ log10 norm|; nan if there was nothing to compare

    @property
    def rss_hows(self) -> set[str]:
        return {self.e2e.rss_how} if self.e2e else set()


@dataclass
class MemoryRow:
    """gateflow's peak memory on a long sequence (one fresh process)."""

    shape: Shape
    e2e: Timing | None
    why: str | None = None
    finite: bool | None = None  # every norm finite
    log10_range: tuple[float, float] | None = None

    @property
    def rss_hows(self) -> set[str]:
        return {self.e2e.rss_how} if self.e2e else set()


@dataclass(frozen=True)
class GpuDevice:
    name: str
    count: int
    memory_gib: float
    cupy: str
    cuda_runtime: int


@dataclass(frozen=True)
class GpuSkipped:
    """The GPU section did not run (no CuPy, no device)."""

    why: str


@dataclass
class GpuRun:
    """gateflow on CuPy against NumPy: agreement at a small size, then the large shape."""

    device: GpuDevice
    agree_shape: Shape
    agree_diff: float  # max |Δ log10| numpy vs cupy, float64
    shape: Shape
    cpu_steps: int  # steps the CPU reference ran (then scaled to shape.T)
    flops: float  # 4·B·n³·T
    e2e: float | None  # a fresh process on cupy, float64
    e2e_why: str | None
    gpu64: float  # warm kernel, float64
    gpu32: float  # warm kernel, float32
    gpu32_diff: float  # max |Δ log10| float32 vs float64 on the GPU
    cpu_measured: float  # the CPU reference, cpu_steps steps
    cpu_threads: str  # "4" or "all (16)"
    cpu64: float  # the CPU reference scaled to shape.T
    cpu_gpu_diff: float | None  # when the CPU ran every step

    @property
    def cpu_extrapolated(self) -> bool:
        return self.cpu_steps != self.shape.T


# --------------------------------------------------------------------------- the run


@dataclass
class Machine:
    python: str
    platform: str
    cpu: str
    cores: int | None
    cores_usable: int | None
    memory_gib: float | None
    blas: str  # the BLAS library numpy uses, with its threads
    blas_threads: int  # what the in-process timings use
    numpy: str
    gateflow: str
    load: tuple[float, float, float] | None  # 1, 5, 15 min load average at the start
    load_end: tuple[float, float, float] | None = None  # and at the end


@dataclass(frozen=True)
class Target:
    """One line of the targets table."""

    label: str
    measured: str
    verdict: str  # "PASS", "MISS" or "—"


@dataclass
class StackRow:
    """A 2-layer stack as one recurrence (``--layer all``) against one layer of the same
    size: every nonzero block, every lag, in process, best of repeats (issue 10)."""

    shape: Shape
    norms: tuple[str, ...]
    one_layer: float  # s
    two_layers: float  # s
    blocks: tuple[int, int]  # nonzero blocks measured: one layer, the stack
    agree: float  # max |Δ log10| between the stack's diagonal blocks and each layer alone

    @property
    def ratio(self) -> float:
        return self.two_layers / self.one_layer


@dataclass
class Results:
    """Everything one run measured, as the report writer reads it."""

    command: str  # "python benchmarks/run.py --quick ..."
    settings: Settings
    gpu_only: bool
    machine: Machine
    peers: dict[str, PeerStatus] = field(default_factory=dict)  # only the peers asked for
    rows: list[SizeRow] = field(default_factory=list)
    f32: Float32Row | None = None
    mem: MemoryRow | None = None
    stacks: list[StackRow] = field(default_factory=list)
    lyapunov: list = field(default_factory=list)  # gfbench.lyapunov.LyapunovRow
    gpu: GpuRun | GpuSkipped | None = None  # None: --no-gpu
    total: float = 0.0  # s, the whole run
