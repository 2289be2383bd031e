"""The GLR benchmark (``latent-replay glr-bench``, glr-spec §5-7, §11, §14): permuted and rotated digit
streams with naive fine-tuning, native replay, latent replay and generative latent replay.

Protocol (see ``docs/glr.md`` for the decisions and the measured tables)
    * Data and streams: :mod:`latent_replay.data.digits` (bundled 8x8 digits by default, MNIST from
      its four IDX files on request); 5 domain-incremental experiences, all 10 classes in each.
    * Network: an MLP ``D -> 256 -> 128 -> 10`` (ReLU), split after ``split`` hidden layers
      (:class:`SplitMLP`); the lower part is trained on experience 0 only and frozen afterwards by
      the latent methods, as the reference's latent replay. Every method of a seed starts from the same
      initial weights and sees the same order, so all of them share the model after experience 0.
    * Training: a fresh SGD (momentum 0.9, weight decay 5e-4, as the reference) per experience, a fixed
      number of epochs (no early stopping), one mean cross-entropy over the concatenation of current
      and replayed rows (the reference's loss). With a non-empty memory the minibatch is split as
      the reference's AR1 formula, ``b_c = N // ((N + M) // B)`` current + ``b_r = B - b_c`` replayed
      rows (at least one replayed row; :func:`batch_split`); replayed rows are drawn uniformly per step.
    * Memories, all with ``M`` slots and the latent memory's update rule (after experience ``t``:
      ``min(M // (t+1), N)`` new slots, the rest kept; :func:`~latent_replay.replay.choose_update`):
      ``replay`` keeps raw uint8 images (:class:`~latent_replay.replay.ReplayMemory`), ``latent`` float32
      latents at the split, ``glr`` the samples of Gaussian-mixture generators fitted on the
      experience's latents (:class:`~latent_replay.replay.generative.GenerativeReplay`, buffer
      sampling as the reference), ``glr-otf`` the generators only (fresh samples every step). Latents
      are taken after training the experience, in eval mode (glr-spec §11.1 "fixed"); the memory is
      not updated after the last experience (nothing would use it, Algorithm 1 "if i < n").
    * Evaluation: after every experience, accuracy on every experience's test set -> the T x T accuracy
      matrix; :mod:`latent_replay.metrics` gives final average accuracy, average forgetting, BWT.

Randomness: every run is repeated for ``seeds`` consecutive seeds. Per seed, the stream's
permutations, the initial weights, minibatch order and replay draws (one ``torch.Generator`` seeded with
the seed), the memory slot choices (``seeded_rng(seed, "glr-bench-memory-slots")``, a named stream of
:func:`~latent_replay.utils.seeded_rng`, independent of the permutations' ``default_rng([seed, k])``)
and GLR's generators (their own named streams, see :mod:`latent_replay.replay.generative`) are all
explicit. torch and BLAS run with
``threads`` threads (:func:`limit_threads`; default 1). Same arguments -> same numbers on the same device.

Output, per stream and sweep (``sweep`` is ``comparison``, ``freeze`` or ``buffer``; every file is
written atomically with :mod:`latent_replay.results`)::

    <out>/<data>_<stream>_<sweep>/config.json             settings, seeds, data, stream transforms, versions
    <out>/<data>_<stream>_<sweep>/summary.csv             one row per run and seed
    <out>/<data>_<stream>_<sweep>/summary_mean.csv        per run: mean and std over seeds (the printed table)
    <out>/<data>_<stream>_<sweep>/accuracy_matrix.csv     run, seed, train_exp, eval_exp, accuracy (tidy)
    <out>/<data>_<stream>_<sweep>/runs/<run>_seed<S>.json matrix, metrics, bytes, timings, GLR diagnostics
    <out>/<data>_<stream>_<sweep>/average_accuracy.png    accuracy over the seen experiences, per run
"""
from __future__ import annotations

import json
import logging
import math
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import __version__
from .data.digits import ROTATIONS, STREAMS, DigitData, Experience, load_digits_data, load_mnist, make_stream
from .metrics import accuracy_matrix_frame, summary
from .replay import ReplayMemory, choose_update
from .replay.generative import MODES, NONNEG, GenerativeReplay
from .results import check_writable, save_figure, write_csv, write_json
from .utils import seeded_rng

log = logging.getLogger(__name__)

#: Method -> display name. ``glr`` materialises a buffer of samples (the reference); ``glr-otf`` keeps
#: the generators only and samples fresh latents for every step (what the paper advertises).
METHODS = {"naive": "naive", "replay": "native replay", "latent": "latent replay", "glr": "GLR",
           "glr-otf": "GLR on the fly"}
LATENT_METHODS = ("latent", "glr", "glr-otf")
DEFAULT_METHODS = ("naive", "replay", "latent", "glr", "glr-otf")
SWEEPS = ("none", "freeze", "buffer")
#: The reference's buffer sizes 600/6000/15000/30000 as fractions of its N = 60,000 images per experience.
BUFFER_FRACTIONS = (0.01, 0.10, 0.25, 0.50)
EVAL_BATCH = 2048


# ====================================================================== settings
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


# ====================================================================== model
def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default Linear initialisation, drawn from ``generator``."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class SplitMLP(nn.Module):
    """``in_dim -> hidden... -> n_classes`` with ReLU; ``lower`` holds the first ``split`` hidden layers
    (empty for split 0: the latent is then the input), ``upper`` the rest and the output layer."""

    def __init__(self, in_dim: int, hidden, n_classes: int, split: int, generator: torch.Generator):
        super().__init__()
        dims = [int(in_dim), *map(int, hidden)]
        blocks = [nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims[:-1], dims[1:])]
        head = nn.Linear(dims[-1], n_classes)
        for m in [*(b[0] for b in blocks), head]:
            with torch.no_grad():
                _init_linear(m, generator)
        self.lower = nn.Sequential(*blocks[:split])
        self.upper = nn.Sequential(*blocks[split:], head)
        self.latent_dim = dims[split]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower(x))


def batch_split(n_current: int, memory: int, minibatch: int) -> tuple[int, int]:
    """(b_c, b_r): current and replayed rows per minibatch, the reference's formula
    ``b_c = N // ((N + M) // B)``, ``b_r = B - b_c`` (glr-spec §4.3), with at least one replayed row."""
    chunks = max(1, (n_current + memory) // minibatch)
    b_c = min(minibatch - 1, max(1, n_current // chunks))
    return b_c, minibatch - b_c


# ====================================================================== one run
def _float_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images.reshape(len(images), -1)).to(device).float().div_(255.0)


class _Run:
    """The state of one run while it goes through the stream."""

    def __init__(self, spec: RunSpec, settings: BenchSettings, stream: list[Experience], device: torch.device):
        self.spec, self.s, self.stream, self.device = spec, settings, stream, device
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.slot_rng = seeded_rng(settings.seed, "glr-bench-memory-slots")
        in_dim = int(np.prod(stream[0].train_images.shape[1:]))
        self.model = SplitMLP(in_dim, settings.hidden, 10, spec.split, self.gen).to(device)
        self.memory = self._make_memory()
        self.test = [(_float_images(e.test_images, device), torch.from_numpy(e.test_labels).to(device)) for e in stream]

    def _make_memory(self):
        spec, s = self.spec, self.s
        if spec.method == "naive":
            return None
        if spec.method == "replay":
            return ReplayMemory(spec.memory, "uint8_frames", self.device)
        if spec.method == "latent":
            return ReplayMemory(spec.memory, "float32", self.device)
        return GenerativeReplay(spec.memory, mode=s.glr_mode, n_components=s.glr_components,
                                covariance_type=s.glr_covariance, reg_covar=s.glr_reg_covar,
                                sampling="buffer" if spec.method == "glr" else "on_the_fly", nonneg=s.glr_nonneg,
                                device=self.device, seed=s.seed)

    # ---------------------------------------------------------------- training
    def _replayed(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.memory), (n,), generator=self.gen)
        rows, labels = self.memory.get(idx)
        if self.spec.method == "replay":   # raw uint8 images -> network input
            rows = rows.reshape(n, -1).float().div_(255.0)
        return rows.to(self.device), labels.to(self.device)

    @torch.no_grad()
    def _lower_latents(self, x: torch.Tensor) -> torch.Tensor:
        """The lower part (eval mode) on every row of ``x``, EVAL_BATCH rows at a time."""
        self.model.eval()
        return torch.cat([self.model.lower(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])

    def train_experience(self, t: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Train on experience ``t``; returns the frozen lower part's latents of ``x`` when it was frozen
        (the memory update reuses them), else None."""
        s, model = self.s, self.model
        frozen = self.spec.freezes and t > 0
        if frozen:
            model.lower.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        replay = self.memory is not None and len(self.memory) > 0
        b_c, b_r = batch_split(len(y), self.memory.capacity, s.minibatch) if replay else (s.minibatch, 0)
        if frozen:   # the frozen lower part sees every image the same way: compute its latents once
            x = self._lower_latents(x)
        net = model.upper if frozen else model
        model.train()
        for _ in range(s.epochs):
            order = torch.randperm(len(y), generator=self.gen).to(self.device)
            for start in range(0, len(y), b_c):
                idx = order[start:start + b_c]
                h, target = x[idx], y[idx]
                if b_r:
                    hr, yr = self._replayed(b_r)
                    h, target = torch.cat([h, hr]), torch.cat([target, yr])
                loss = F.cross_entropy(net(h), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return x if frozen else None

    @torch.no_grad()
    def update_memory(self, t: int, exp: Experience, x: torch.Tensor, y: torch.Tensor,
                      z: torch.Tensor | None = None) -> None:
        """Put experience ``t`` into the memory; ``z``: the latents of ``x`` if already computed with the
        current (frozen) lower part."""
        spec = self.spec
        if spec.method != "replay" and z is None:
            z = self._lower_latents(x)
        if spec.method not in ("replay", "latent"):     # generative: the memory fits its models
            self.memory.update(self.slot_rng, t, z, y)
            return
        pick, keep = choose_update(self.slot_rng, spec.memory, t, len(y), len(self.memory))
        p = torch.as_tensor(pick, device=self.device)
        rows = torch.from_numpy(exp.train_images[pick]).to(self.device) if spec.method == "replay" else z[p]
        self.memory.insert(rows, y[p], keep)

    @torch.no_grad()
    def evaluate(self) -> np.ndarray:
        self.model.eval()
        accs = []
        for x, y in self.test:
            correct = sum(int((self.model(x[i:i + EVAL_BATCH]).argmax(1) == y[i:i + EVAL_BATCH]).sum())
                          for i in range(0, len(y), EVAL_BATCH))
            accs.append(correct / max(1, len(y)))
        return np.asarray(accs)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, bar=None) -> RunResult:
        T = len(self.stream)
        result = RunResult(self.spec, np.zeros((T, T)), self.s.seed)
        for t, exp in enumerate(self.stream):
            x = _float_images(exp.train_images, self.device)
            y = torch.from_numpy(exp.train_labels).to(self.device)
            self._sync()
            t0 = time.perf_counter()
            z = self.train_experience(t, x, y)
            self._sync()   # queued GPU work counts where it was queued, not where it is first waited for
            t1 = time.perf_counter()
            if self.memory is not None and t < T - 1:
                self.update_memory(t, exp, x, y, z)
                result.memory_bytes.append(int(self.memory.nbytes))
            self._sync()
            t2 = time.perf_counter()
            result.matrix[t] = self.evaluate()
            result.train_seconds += t1 - t0
            result.update_seconds += t2 - t1
            result.eval_seconds += time.perf_counter() - t2
            log.debug("%s after experience %d: %s", self.spec.name, t, np.round(result.matrix[t], 3).tolist())
            if bar is not None:
                bar.update(1)
        result.memory_patterns = 0 if self.memory is None else len(self.memory)
        if isinstance(self.memory, GenerativeReplay):
            h = self.memory.history
            result.glr = {"config": self.memory.config(), "memory_breakdown": self.memory.memory_breakdown(),
                          "label_agreement": [x["label_agreement"] for x in h],
                          "em_iterations": [x.get("em_iterations") for x in h],
                          "fit_seconds": [x["fit_seconds"] for x in h]}
        return result


def run_one(spec: RunSpec, settings: BenchSettings, stream: list[Experience], device: torch.device | str = "cpu",
            bar=None) -> RunResult:
    """Train one run through the stream and return its accuracy matrix and bookkeeping."""
    if spec.method not in METHODS:
        raise ValueError(f"unknown method {spec.method!r} (one of {', '.join(METHODS)})")
    return _Run(spec, replace(settings, split=spec.split), stream, torch.device(device)).run(bar)


# ====================================================================== plans and results
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


METRICS = ("final_average_accuracy", "average_forgetting", "backward_transfer")


def results_frame(results: list[RunResult]) -> pd.DataFrame:
    """One row per run and seed."""
    return pd.DataFrame([r.row() for r in results])


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run (in the order of ``frame``): the number of seeds, mean and population std (ddof 0, as
    :func:`latent_replay.results.aggregate_runs`) of every metric, mean bytes and seconds."""
    g = frame.groupby("run", sort=False)
    out = g[["method", "split", "memory_slots"]].first()
    out.insert(0, "seeds", g.size())
    out["memory_bytes"] = g["memory_bytes"].mean()
    for m in METRICS:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=0)
    for c in ("train_seconds", "update_seconds", "eval_seconds"):
        out[c] = g[c].mean()
    return out.reset_index()


def matrices_frame(results: list[RunResult]) -> pd.DataFrame:
    """Every accuracy matrix, tidy: run, seed, train_exp, eval_exp, accuracy."""
    frames = []
    for r in results:
        f = accuracy_matrix_frame(r.matrix)
        f.insert(0, "seed", r.seed)
        f.insert(0, "run", r.spec.name)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def write_results(folder: str | Path, results: list[RunResult], config: dict | None = None, *,
                  plot: bool = False, title: str = "") -> pd.DataFrame:
    """Write under ``folder`` (atomically): ``summary.csv`` (a row per run and seed),
    ``summary_mean.csv`` (:func:`aggregate`), ``accuracy_matrix.csv``, ``runs/<run>_seed<S>.json``, and
    ``config.json`` and ``average_accuracy.png`` when asked; returns the aggregated frame."""
    folder = Path(folder)
    frame = results_frame(results)
    mean = aggregate(frame)
    if config is not None:
        write_json(folder / "config.json", config)
    written = set()
    for r in results:
        name = f"{r.spec.name}_seed{r.seed}.json"
        written.add(name)
        write_json(folder / "runs" / name, r.record())
    for stale in (folder / "runs").glob("*.json"):   # an earlier call's runs in the same folder
        if stale.name not in written:
            stale.unlink()
    write_csv(folder / "accuracy_matrix.csv", matrices_frame(results))
    write_csv(folder / "summary.csv", frame)
    write_csv(folder / "summary_mean.csv", mean)
    if plot:
        plot_average_accuracy(results, folder / "average_accuracy.png", title)
    else:
        (folder / "average_accuracy.png").unlink(missing_ok=True)   # an earlier call's plot
    return mean


TOOL_NAME = "latent-replay glr-bench"


def load_results(folder: str | Path) -> list[RunResult]:
    """The runs :func:`write_results` wrote under ``folder`` (``runs/*.json``), in file-name order."""
    results = []
    for f in sorted(Path(folder, "runs").glob("*.json")):
        rec = json.loads(f.read_text())
        results.append(RunResult(spec=RunSpec(**rec["spec"]), matrix=np.asarray(rec["accuracy_matrix"], dtype=float),
                                 seed=int(rec["seed"]), memory_bytes=list(rec.get("memory_bytes_after_update", [])),
                                 memory_patterns=int(rec.get("memory_patterns", 0)),
                                 train_seconds=float(rec.get("train_seconds", 0.0)),
                                 update_seconds=float(rec.get("update_seconds", 0.0)),
                                 eval_seconds=float(rec.get("eval_seconds", 0.0)), glr=rec.get("glr")))
    return results


def find_bench_folders(roots) -> list[Path]:
    """Folders under ``roots`` that hold a glr-bench comparison or sweep (``config.json`` by this tool)."""
    found = []
    for root in roots:
        for cfg in sorted(Path(root).rglob("config.json")):
            try:
                tool = json.loads(cfg.read_text()).get("tool")
            except (OSError, ValueError, AttributeError):
                continue
            if tool == TOOL_NAME and (cfg.parent / "runs").is_dir():
                found.append(cfg.parent)
    return found


def bench_figures(roots, out: str | Path, formats=("png",)) -> dict[str, list[Path]]:
    """For ``latent-replay figures``: the average-accuracy plot of every glr-bench folder under ``roots``,
    as ``<out>/glr_<folder>.<format>``; returns {figure name: files}."""
    written: dict[str, list[Path]] = {}
    for folder in find_bench_folders(roots):
        results = load_results(folder)
        if not results:
            continue
        name = f"glr_{folder.name}"
        written[name] = plot_average_accuracy(results, Path(out) / name, folder.name, formats=formats)
    return written


def seen_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Mean accuracy over the experiences seen so far, after each experience: ``mean_{j<=t} A[t, j]``."""
    a = np.asarray(matrix, dtype=np.float64)
    return np.array([a[t, : t + 1].mean() for t in range(len(a))])


#: One colour per method; the variants of a method (split, memory size) differ by line style and marker.
METHOD_COLOURS = {"naive": "#7f7f7f", "replay": "#ff7f0e", "latent": "#1f77b4", "glr": "#d62728",
                  "glr-otf": "#2ca02c"}
_VARIANT_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"))


def plot_average_accuracy(results: list[RunResult], path: Path, title: str = "", formats=None) -> list[Path]:
    """:func:`seen_accuracy` after each experience, mean over seeds, one line per run (colour = method).

    Written (atomically) to ``path``, or, with ``formats``, to ``path`` with each format as suffix;
    returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list] = {}
    specs: dict[str, RunSpec] = {}
    for r in results:
        curves.setdefault(r.spec.name, []).append(seen_accuracy(r.matrix))
        specs[r.spec.name] = r.spec
    fig, ax = plt.subplots(figsize=(6.4, 3.4), constrained_layout=True)
    variant: dict[str, int] = {}
    for name, cs in curves.items():
        spec = specs[name]
        k = variant[spec.method] = variant.get(spec.method, -1) + 1
        style, marker = _VARIANT_STYLES[k % len(_VARIANT_STYLES)]
        y = 100 * np.mean(cs, axis=0)
        ax.plot(range(1, len(y) + 1), y, color=METHOD_COLOURS[spec.method], linestyle=style, marker=marker,
                markersize=3, linewidth=1.2, label=_label(spec))
    ax.set_xlabel("experiences trained")
    ax.set_ylabel("mean accuracy on seen experiences (%)")
    ax.set_xticks(range(1, len(results[0].matrix) + 1))
    ax.grid(alpha=0.3)
    seeds = len({r.seed for r in results})
    if title or seeds > 1:
        ax.set_title(title + (f" (mean of {seeds} seeds)" if seeds > 1 else ""), fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    paths = [path] if formats is None else [path.parent / f"{path.name}.{f.strip()}" for f in formats if f.strip()]
    try:
        return save_figure(fig, paths, dpi=150)
    finally:
        plt.close(fig)


def _label(spec: RunSpec) -> str:
    words = METHODS[spec.method]
    if spec.freezes:
        words += f", split {spec.split}"
    if spec.uses_memory:
        words += f", M={spec.memory}"
    return words


def _bytes(n: float) -> str:
    if n <= 0:
        return "0"
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_table(mean: pd.DataFrame) -> str:
    """The aggregated summary (:func:`aggregate`) as a plain text table, accuracies in percent
    (``mean ± std`` over seeds when there are several)."""
    def pct(metric):
        m, sd = 100 * mean[f"{metric}_mean"], 100 * mean[f"{metric}_std"]
        if (mean["seeds"] > 1).any():
            return [f"{a:.1f} ± {b:.1f}" for a, b in zip(m, sd)]
        return [f"{a:.1f}" for a in m]

    t = pd.DataFrame({
        "method": [METHODS[m] for m in mean["method"]],
        "split": [("-" if pd.isna(v) else str(int(v))) for v in mean["split"]],
        "memory": [int(v) if v else "-" for v in mean["memory_slots"]],
        "bytes kept": [_bytes(v) for v in mean["memory_bytes"]],
        "final acc %": pct("final_average_accuracy"),
        "forgetting %": pct("average_forgetting"),
        "BWT %": pct("backward_transfer"),
        "train s": mean["train_seconds"].round(1),
        "fit s": mean["update_seconds"].round(2),
    })
    return t.to_string(index=False)


# ====================================================================== the whole benchmark
def load_data(data: str, *, mnist_dir: Path | None = None, verify: bool = True, seed: int = 0,
              max_train: int | None = None) -> DigitData:
    if data == "digits":
        d = load_digits_data(seed=seed)
    elif data == "mnist":
        d = load_mnist(mnist_dir if mnist_dir is not None else Path("data/mnist"), verify=verify)
    else:
        raise ValueError(f"--data must be digits or mnist, got {data!r}")
    return d.subsample_train(max_train, seed) if max_train is not None else d


@contextmanager
def limit_threads(n: int | None):
    """Run with ``n`` torch threads and ``n`` BLAS/OpenMP threads (scikit-learn's EM), restored afterwards.

    The networks and mixtures here are tiny: on a busy 2-core machine two threads made a GMM fit 75x
    slower than one, and torch's reductions (so the last digits of the results) depend on the count.
    """
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        with threadpool_limits(int(n)):
            yield
    finally:
        torch.set_num_threads(before)


def run_benchmark(data: DigitData, settings: BenchSettings, out: str | Path, *, sweep: str = "none",
                  methods=DEFAULT_METHODS, seeds: int = 1, device: torch.device | str = "cpu", plot: bool = True,
                  progress: bool = True, threads: int | None = 1) -> tuple[Path, pd.DataFrame]:
    """Every planned run for seeds ``settings.seed .. settings.seed + seeds - 1`` (each seed: its own
    stream, initial weights, order and memory draws; the data split stays), with :func:`limit_threads`;
    writes the results and returns (folder, aggregated frame)."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    with limit_threads(threads):
        return _run_benchmark(data, settings, out, sweep, methods, seeds, torch.device(device), plot, progress)


def warm_up(settings: BenchSettings, in_dim: int, device: torch.device) -> None:
    """Untimed: a process's first training steps and first mixture fit pay one-off costs (kernel and
    thread-pool set-up, library loading) that would otherwise land in the first run's seconds (naive,
    seed 0: 4.3 s against 0.7 s for the others). Own generators only: no seeded stream is touched."""
    from sklearn.mixture import GaussianMixture

    # nn.Linear draws its default initialisation from torch's global generator: give its state back
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        g = torch.Generator().manual_seed(0)
        model = SplitMLP(in_dim, settings.hidden, 10, settings.split, g).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9)
        x = torch.rand(settings.minibatch, in_dim, generator=g).to(device)
        y = torch.randint(0, 10, (settings.minibatch,), generator=g).to(device)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        with torch.no_grad():
            model(x)
    GaussianMixture(n_components=2, covariance_type=settings.glr_covariance, random_state=0).fit(
        np.random.default_rng(0).random((64, 8)))


def _run_benchmark(data, settings, out, sweep, methods, seeds, device, plot, progress):
    n_train = len(data.train_labels)
    specs = plan_runs(settings, n_train, sweep, methods)
    folder = Path(out) / f"{data.name}_{settings.stream}_{'comparison' if sweep == 'none' else sweep}"
    log.info("%s %s stream: %d experiences of %d train / %d test images; %d runs x %d seeds on %s -> %s",
             data.name, settings.stream, settings.experiences, n_train, len(data.test_labels), len(specs), seeds,
             device, folder)
    warm_up(settings, int(np.prod(data.image_shape)), device)
    t0 = time.perf_counter()
    results, transforms = [], {}
    with tqdm(total=len(specs) * seeds * settings.experiences, desc=f"glr-bench {settings.stream}", unit="exp",
              disable=not progress, leave=False) as bar:
        for seed in range(settings.seed, settings.seed + seeds):
            s = replace(settings, seed=seed)
            stream = make_stream(data, s.stream, n_experiences=s.experiences, seed=seed)
            transforms[seed] = [e.transform for e in stream]
            for spec in specs:
                bar.set_postfix_str(f"{spec.name} seed {seed}")
                results.append(run_one(spec, s, stream, device, bar))
                log.info("%s seed %d: final average accuracy %.4f", spec.name, seed,
                         results[-1].row()["final_average_accuracy"])
    config = {"tool": TOOL_NAME, "version": __version__, "settings": asdict(settings),
              "seeds": list(transforms), "sweep": sweep, "methods": list(methods), "runs": [s.name for s in specs],
              "device": str(device), "data": data.describe(), "stream": {str(k): v for k, v in transforms.items()},
              "seconds": time.perf_counter() - t0, "torch": torch.__version__,
              "python": platform.python_version(), "threads": torch.get_num_threads()}
    title = f"{data.name}, {settings.stream} stream"
    return folder, write_results(folder, results, config, plot=plot, title=title)


# ====================================================================== command line
def _seed_words(seed: int, seeds: int) -> str:
    return f"seed {seed}" if seeds == 1 else f"seeds {seed}..{seed + seeds - 1}, mean ± std"


def _method_list(text: str) -> tuple:
    return check_methods(tuple(m.strip() for m in text.split(",") if m.strip()))


@click.command("glr-bench")
@click.option("--data", type=click.Choice(["digits", "mnist"]), default="digits", show_default=True,
              help="digits: scikit-learn's bundled 8x8 digits (offline); mnist: the four IDX files in --mnist-dir.")
@click.option("--mnist-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data/mnist"),
              show_default=True, help="Folder with train-images-idx3-ubyte[.gz] and the three other MNIST files.")
@click.option("--no-verify", is_flag=True, help="Do not check the MNIST files' SHA-256 (structure is still checked).")
@click.option("--max-train", type=click.IntRange(min=1), default=None,
              help="Use at most this many training images (seeded subset).")
@click.option("--stream", type=click.Choice(["permuted", "rotated", "both"]), default="both", show_default=True)
@click.option("--sweep", type=click.Choice(["none", "freeze", "buffer", "all"]), default="none", show_default=True,
              help="none: the method comparison; freeze: latent methods at every split; buffer: memory sizes "
                   "1/10/25/50 % of the training images; all: the three.")
@click.option("--methods", default=",".join(DEFAULT_METHODS), show_default=True,
              help=f"Comma-separated, from {', '.join(METHODS)}.")
@click.option("--experiences", default=5, show_default=True)
@click.option("--split", default=BenchSettings.split, show_default=True,
              help="Hidden layers below the split, frozen after experience 0 (0 = replay at the input).")
@click.option("--memory", type=int, default=None,
              help="Memory slots of every replay method [default: 10 % of the training images per experience].")
@click.option("--epochs", default=BenchSettings.epochs, show_default=True, help="Epochs per experience.")
@click.option("--lr", default=BenchSettings.lr, show_default=True, help="SGD learning rate (momentum 0.9, wd 5e-4).")
@click.option("--minibatch", default=BenchSettings.minibatch, show_default=True)
@click.option("--glr-mode", type=click.Choice(list(MODES)), default=BenchSettings.glr_mode, show_default=True,
              help="joint: one GMM per experience, a component per class (reference); classcond: one per class.")
@click.option("--glr-nonneg", type=click.Choice(list(NONNEG)), default=BenchSettings.glr_nonneg, show_default=True,
              help="What GLR does about negative samples of ReLU latents.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="First seed (also seeds the digits train/test split).")
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Repeat every run with seeds SEED..SEED+SEEDS-1.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads for torch and BLAS (the models are tiny: more threads only add overhead, and "
                   "results can depend on the thread count).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results/glr-bench"),
              show_default=True, help="Results folder (one subfolder per stream and sweep).")
@click.option("--no-plot", is_flag=True, help="Do not write average_accuracy.png.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def glr_bench_command(data, mnist_dir, no_verify, max_train, stream, sweep, methods, experiences, split, memory, epochs,
                      lr, minibatch, glr_mode, glr_nonneg, seed, seeds, device, threads, out, no_plot, no_progress):
    """Generative latent replay benchmark: permuted/rotated digits, naive vs native, latent and generative replay."""
    from .train import resolve_device

    methods = _method_list(methods)
    streams = list(STREAMS) if stream == "both" else [stream]
    sweeps = ["none", "freeze", "buffer"] if sweep == "all" else [sweep]
    base = dict(data=data, experiences=experiences, split=split, memory=memory, epochs=epochs, lr=lr,
                minibatch=minibatch, glr_mode=glr_mode, glr_nonneg=glr_nonneg, seed=seed)
    all_settings = [BenchSettings(stream=s, **base) for s in streams]   # validates before any work
    for sw in sweeps:
        plan_runs(all_settings[0], 100, sw, methods)
    dev = resolve_device(device)
    check_writable(out)   # before the training, not when its results are written
    dataset = load_data(data, mnist_dir=mnist_dir, verify=not no_verify, seed=seed, max_train=max_train)
    t0 = time.perf_counter()
    for settings in all_settings:
        for sw in sweeps:
            t1 = time.perf_counter()
            folder, frame = run_benchmark(dataset, settings, out, sweep=sw, methods=methods, seeds=seeds,
                                          device=dev, plot=not no_plot, progress=not no_progress, threads=threads)
            what = "comparison" if sw == "none" else f"{sw} sweep"
            n = settings.experiences
            click.echo(f"\n{dataset.name}, {settings.stream} stream, {what} ({n} experience{'s' * (n != 1)}, "
                       f"{_seed_words(seed, seeds)}, {time.perf_counter() - t1:.0f} s on {dev}, {threads} thread(s)):")
            click.echo(format_table(frame))
            click.echo(f"results in {folder}")
    click.echo(f"\ntotal {time.perf_counter() - t0:.0f} s")
