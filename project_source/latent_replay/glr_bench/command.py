"""``latent-replay glr-bench``: the command line of the GLR benchmark (loaded lazily by
:mod:`latent_replay.cli`)."""
from __future__ import annotations

import time
from pathlib import Path

import click

from ..data.digits import STREAMS
from ..replay.generative import MODES, NONNEG
from ..results import check_writable
from .benchmark import load_data, run_benchmark
from .results import format_table
from .settings import DEFAULT_METHODS, METHODS, BenchSettings, check_methods, plan_runs


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
    from ..train import resolve_device

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
