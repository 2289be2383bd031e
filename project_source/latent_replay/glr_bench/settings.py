"""The GLR benchmark's settings and runs: :class:`BenchSettings` (everything that decides the numbers),
:class:`RunSpec` (a method at a split and a memory size), :class:`RunResult` (its accuracy matrix and
bookkeeping) and :func:`plan_runs` (the runs of a comparison or a sweep)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.digits import ROTATIONS, STREAMS
from ..metrics import summary
from ..replay.generative import MODES, NONNEG

#: Method -> display name. ``glr`` materialises a buffer of samples (the reference); ``glr-otf`` keeps
#: the generators only and samples fresh latents for every step (what the paper advertises).
METHODS = {"naive": "naive", "replay": "native replay", "latent": "latent replay", "glr": "GLR",
           "glr-otf": "GLR on the fly"}
LATENT_METHODS = ("latent", "glr", "glr-otf")
DEFAULT_METHODS = ("naive", "replay", "latent", "glr", "glr-otf")
SWEEPS = ("none", "freeze", "buffer")
#: The reference's buffer sizes 600/6000/15000/30000 as fractions of its N = 60,000 images per experience.
BUFFER_FRACTIONS = (0.01, 0.10, 0.25, 0.50)
#: ``config.json``'s ``tool``: how :func:`~latent_replay.glr_bench.results.find_bench_folders` knows them.
TOOL_NAME = "latent-replay glr-bench"


@dataclass(frozen=True)
class BenchSettings:
    """Everything that decides the numbers of one benchmark (saved in ``config.json``)."""

    data: str = "digits"
    stream: str = "permuted"
    experiences: int = 5
    hidden: tuple = (256, 128)
    split: int = 1                  # hidden layers below the split (frozen after experience 0)
    memory: int | None = None       # slots; None: memory_fraction of the training images
    memory_fraction: float = 0.10   # the reference's 6000 of 60,000
    epochs: int = 10
    minibatch: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    glr_mode: str = "joint"         # the reference: one mixture per experience, a component per class
    glr_covariance: str = "diag"
    glr_components: int = 1
    glr_nonneg: str = "none"         # the reference: raw Gaussian samples
    glr_reg_covar: float = 1e-6
    seed: int = 0

    def __post_init__(self):
        if self.stream not in STREAMS:
            raise ValueError(f"--stream must be one of {', '.join(STREAMS)}, got {self.stream!r}")
        top = len(ROTATIONS) if self.stream == "rotated" else 1000
        if not 1 <= self.experiences <= top:
            raise ValueError(f"--experiences must be 1..{top} for the {self.stream} stream, got {self.experiences}")
        if not 0 <= self.split <= len(self.hidden):
            raise ValueError(f"--split must be 0..{len(self.hidden)} (hidden layers below the split), got {self.split}")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.minibatch < 2:
            raise ValueError(f"--minibatch must be >= 2 (current and replayed rows), got {self.minibatch}")
        if self.memory is not None and self.memory < 1:
            raise ValueError(f"--memory must be >= 1 slot, got {self.memory}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.glr_mode not in MODES:
            raise ValueError(f"--glr-mode must be one of {', '.join(MODES)}, got {self.glr_mode!r}")
        if self.glr_nonneg not in NONNEG:
            raise ValueError(f"--glr-nonneg must be one of {', '.join(NONNEG)}, got {self.glr_nonneg!r}")

    def memory_slots(self, n_train: int) -> int:
        return int(self.memory) if self.memory is not None else max(1, int(round(self.memory_fraction * n_train)))


@dataclass(frozen=True)
class RunSpec:
    """One run: a method at a split (hidden layers frozen after experience 0) and a memory size."""

    method: str
    split: int
    memory: int

    @property
    def uses_memory(self) -> bool:
        return self.method != "naive"

    @property
    def freezes(self) -> bool:
        return self.method in LATENT_METHODS

    @property
    def name(self) -> str:
        if self.method == "naive":
            return "naive"
        if self.method == "replay":
            return f"replay_m{self.memory}"
        return f"{self.method}_split{self.split}_m{self.memory}"


@dataclass
class RunResult:
    """The outcome of one run: the accuracy matrix ``A[i, j]`` (after experience i, on experience j)."""

    spec: RunSpec
    matrix: np.ndarray
    seed: int = 0
    memory_bytes: list = field(default_factory=list)    # kept after each memory update
    memory_patterns: int = 0
    train_seconds: float = 0.0
    update_seconds: float = 0.0
    eval_seconds: float = 0.0
    glr: dict | None = None

    def row(self) -> dict:
        m = summary(self.matrix)
        spec = self.spec
        return {"run": spec.name, "seed": self.seed, "method": spec.method,
                "split": spec.split if spec.freezes else None, "memory_slots": spec.memory if spec.uses_memory else 0,
                "memory_bytes": max(self.memory_bytes, default=0),
                **m, "train_seconds": self.train_seconds, "update_seconds": self.update_seconds,
                "eval_seconds": self.eval_seconds}

    def record(self) -> dict:
        return {**self.row(), "spec": asdict(self.spec), "accuracy_matrix": self.matrix.tolist(),
                "memory_bytes_after_update": list(self.memory_bytes), "memory_patterns": self.memory_patterns,
                "glr": self.glr}


def check_methods(methods) -> tuple:
    """``methods`` as a tuple; ValueError naming the unknown ones."""
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"--methods: unknown {', '.join(unknown) or '(none given)'} "
                         f"(choose from {', '.join(METHODS)})")
    return methods


def plan_runs(settings: BenchSettings, n_train: int, sweep: str = "none", methods=DEFAULT_METHODS) -> list[RunSpec]:
    """The runs of a comparison (``none``) or a sweep.

    ``freeze``: the latent methods at every split 0..len(hidden) (0 = nothing frozen, the latent is the
    input), naive and native replay once for reference. ``buffer``: the memory methods at the
    reference's 1/10/25/50 % of the training images per experience, naive once.
    """
    if sweep not in SWEEPS:
        raise ValueError(f"--sweep must be one of {', '.join(SWEEPS)}, got {sweep!r}")
    check_methods(methods)
    m0 = settings.memory_slots(n_train)
    specs = []
    for method in methods:
        if method == "naive" or sweep == "none" or (sweep == "freeze" and method == "replay"):
            specs.append(RunSpec(method, settings.split, m0))
        elif sweep == "freeze":
            specs += [RunSpec(method, s, m0) for s in range(len(settings.hidden) + 1)]
        else:
            sizes = sorted({max(1, int(round(f * n_train))) for f in BUFFER_FRACTIONS})
            specs += [RunSpec(method, settings.split, m) for m in sizes]
    return specs
