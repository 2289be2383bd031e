"""The whole GLR benchmark: :func:`run_benchmark` runs every planned run for every seed (with
:func:`limit_threads`, after an untimed :func:`warm_up`) and writes the results; :func:`load_data`
loads the digits or MNIST."""
from __future__ import annotations

import logging
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import __version__
from ..data.digits import DigitData, load_digits_data, load_mnist
from ..registry import STREAMS
from ..results import aggregate_runs, run_dirs
from .loop import run_one
from .model import SplitMLP
from .results import write_results
from .settings import DEFAULT_METHODS, TOOL_NAME, BenchSettings, plan_runs

log = logging.getLogger(__package__)   # "latent_replay.glr_bench", the logger of the whole benchmark


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
            stream = STREAMS.get(s.stream).obj(data, n_experiences=s.experiences, seed=seed)
            transforms[seed] = [e.transform for e in stream.experiences]
            for spec in specs:
                bar.set_postfix_str(f"{spec.name} seed {seed}")
                run_folder = folder / spec.name / f"run{seed}"   # an ordinary run folder (metrics.csv, summary.json)
                run_folder.mkdir(parents=True, exist_ok=True)
                results.append(run_one(spec, s, stream, device, bar, run_folder))
                log.info("%s seed %d: final average accuracy %.4f", spec.name, seed,
                         results[-1].row()["final_average_accuracy"])
    _ordinary_experiments(folder, {(r.spec.name, r.seed) for r in results})
    config = {"tool": TOOL_NAME, "version": __version__, "settings": asdict(settings),
              "seeds": list(transforms), "sweep": sweep, "methods": list(methods), "runs": [s.name for s in specs],
              "device": str(device), "data": data.describe(), "stream": {str(k): v for k, v in transforms.items()},
              "seconds": time.perf_counter() - t0, "torch": torch.__version__,
              "python": platform.python_version(), "threads": torch.get_num_threads()}
    title = f"{data.name}, {settings.stream} stream"
    return folder, write_results(folder, results, config, plot=plot, title=title)


def _ordinary_experiments(folder: Path, done: set[tuple[str, int]]) -> None:
    """Each run of the benchmark is an experiment folder of the suite (``<run>/run<seed>/`` and its
    ``summary.csv`` over the seeds, :func:`~latent_replay.results.aggregate_runs`); run folders an
    earlier call left in ``folder`` (other runs or seeds) are removed, as its ``runs/*.json`` are."""
    for experiment in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "runs"):
        for number, run_folder in run_dirs(experiment):
            if (experiment.name, number) not in done:
                shutil.rmtree(run_folder)
        if any(name == experiment.name for name, _ in done):
            aggregate_runs(experiment)
            continue
        (experiment / "summary.csv").unlink(missing_ok=True)
        if not any(experiment.iterdir()):
            experiment.rmdir()

