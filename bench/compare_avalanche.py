"""Side by side: Avalanche 0.6.0's ``AR1`` against the suite's AR1*-free + latent replay at conv5_4/dw.

Prints one JSON object with, per figure, both values and the ratio (ours over theirs or theirs over
ours, whichever reads "how many times better"):

* incremental-batch training throughput: rows trained on (new + replayed, every epoch) per second,
  median over the incremental batches; also seconds per incremental batch;
* first-batch training throughput (whole network learning);
* evaluation seconds per batch on the test list (median over the incremental batches);
* peak RSS of the process (``VmHWM``), and the peak RSS of the incremental batches alone (the
  high-water mark is reset after batch 0's training and evaluation, ``bench/procstat.py``);
* final test accuracy, and (Avalanche) how many of the replay labels it stored are wrong.

Same data, sizes, hyperparameters, threads and allocator on both sides: the stream of
``bench/synthetic_stream.py`` (learnable synthetic CORe50 at 128x128: a 1500-frame first batch, then
``--batches`` NICv2-391 batches of 300 frames of one video each, and a 2,249-frame test list) is
rendered once and memory-mapped by both; memory 1500, minibatch 128, ``--epochs`` epochs (4) per
incremental batch and ``--first-epochs`` (1) on batch 0, SGD with momentum 0.9 and weight decay 0.0005,
learning rate ``--lr-first`` on batch 0 and ``--lr`` after it (ours with the classifier at the same
rate as Avalanche, ``classifier_lr_mult = 1``), ImageNet input normalisation, random initial
weights, ``--threads`` torch threads, and ``GLIBC_TUNABLES`` set (``--glibc tuned``, the Makefile's
setting) or unset (``--glibc default``) in both processes. Each side runs in its own fresh process;
the two alternate ``--reps`` times (ours first on even repetitions, Avalanche first on odd ones) and
the JSON reports medians (every repetition under ``runs``).

Each side uses its own defaults for what the other does not have: Avalanche's Batch Renormalization
schedule, its plain layout and its frozen-in-eval-mode lower BRN statistics; our Caffe BRN schedule,
channels-last, the lower-part precompute and the test-latent cache (the suite's defaults).

Avalanche runs from its own virtual environment (default ``bench/.venv-avalanche``, created on first
use with ``pip install avalanche-lib==0.6.0 pytorchcv==0.0.74``; the machine's pip constraint file
keeps torch at the suite's 2.14.1). Its ``AR1`` asks pytorchcv for ImageNet weights at construction;
this script swaps the ``MobilenetV1`` that ``avalanche.training.supervised.ar1`` uses for one built with
``pretrained=False`` (inside the worker process only; nothing is installed or changed on disk).

Replay labels: Avalanche 0.6.0's ``AR1`` collects the latent activations of the first epoch in
*loader order* (the training loader shuffles) but takes their labels from the experience's dataset in
*dataset order* (``curr_data.targets[idx]``), so a stored activation gets the label of another
pattern. The worker counts this: ``replay_label_mismatch`` is, per batch, the fraction of the labels
it stored that differ from the true label of the stored activation (recorded from the minibatches of
the first epoch). On a single-class NICv2-391 batch the error is invisible; on a multi-class batch
(batch 0) it is not.

Usage::

    .venv/bin/python bench/compare_avalanche.py                     # about 25 minutes on 2 cores
    .venv/bin/python bench/compare_avalanche.py --reps 3 --batches 3 --out compare.json
    .venv/bin/python bench/compare_avalanche.py --quick             # tiny sizes, for smoke tests

Do not run it next to another torch process: two-thread training collapses when a second busy process
shares the cores (``docs/performance.md``, "Allocator setting and a second busy process").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procstat import emit, peak_rss, reset_peak_rss, run_measured, worker_env

HERE = Path(__file__).resolve().parent
TUNED_GLIBC = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736"
AVALANCHE_REQUIREMENTS = ("avalanche-lib==0.6.0", "pytorchcv==0.0.74")
DEFAULT_VENV = HERE / ".venv-avalanche"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Tiny sizes for smoke tests; 128x128 stays (Avalanche's MobilenetV1 ends in a fixed 4x4 average pool).
QUICK = dict(size=128, first_frames=4, new_frames=16, test_frames=24, memory=24, minibatch=16, epochs=1.0,
             first_epochs=1.0, batches=2, reps=1)


# --------------------------------------------------------------------------------- our worker
def worker_ours(args) -> dict:
    """AR1*-free + latent replay at conv5_4/dw through the suite's RunTrainer.train() (checkpoints too)."""
    sys.path.insert(0, str(HERE.parent / "project_source"))
    sys.path.insert(0, str(HERE))
    import numpy as np
    import torch

    from latent_replay.config import ExperimentConfig
    from latent_replay.streams.core50 import NICv2Stream
    from latent_replay.train import RunTrainer, plan_batch
    from synthetic_stream import load_stream

    store, scenario = load_stream(args.stream)
    out_dir = Path(args.work) / "ours-run"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    settings = dict(
        method="ar1free", scenario=391, replay="latent", latent_layer="conv5_4/dw", replay_memory=args.memory,
        runs=[0], minibatch=args.minibatch, epochs=args.epochs, epochs_first_batch=args.first_epochs,
        lr_first_batch=args.lr_first, lr=args.lr, classifier_lr_mult=1.0, momentum=0.9, weight_decay=0.0005,
        preprocessing="imagenet", device="cpu", seed=args.seed, dataset_root=args.work, filelists=args.work,
        out=str(out_dir))
    cfg = ExperimentConfig(**{**settings, **getattr(args, "overrides", {})})   # memory_phases.py --set
    rt = RunTrainer(cfg, 0, NICv2Stream(scenario, store), torch.device("cpu"), out_dir, progress=False)
    train_batch, peaks = rt.train_batch, {}

    def measured_batch(b):          # the peak RSS of batch 0 (whole network), then of the rest
        row = train_batch(b)
        if b == 0:
            peaks["first"] = peak_rss()
            reset_peak_rss()
        return row

    rt.train_batch = measured_batch
    made_file, file_bytes = rt._test_latents_file, []

    def recorded_file(frames):      # the test latents kept in a file (page cache, outside the RSS)
        rows = made_file(frames)
        file_bytes.append(rows.nbytes if rows is not None else 0)
        return rows

    rt._test_latents_file = recorded_file
    rt.train()
    batches, n_mem = [], 0
    for b, row in enumerate(r for r in rt.rows if r["kind"] == "batch"):
        s = plan_batch(len(scenario.batches[b]), n_mem, minibatch=cfg.minibatch,
                       epochs=cfg.epochs_first_batch if b == 0 else cfg.epochs, pad=False, count_memory=True,
                       perm=np.arange)
        rows = int(sum(len(s.new_rows(i)) + len(s.mem_rows(i)) for i in range(s.iterations)))
        batches.append({"train_seconds": row["train_seconds"], "rows": rows, "eval_seconds": row["eval_seconds"],
                        "test_accuracy": row["test_accuracy"], "memory_patterns": row["memory_patterns"],
                        "memory_bytes": row["memory_bytes"]})
        n_mem = row["memory_patterns"]
    return {"batches": batches, "peak_rss_first_batch_bytes": peaks["first"], "peak_rss_incremental_bytes": peak_rss(),
            "test_latents_file_bytes": sum(file_bytes)}


# --------------------------------------------------------------------------- Avalanche worker
def worker_avalanche(args) -> dict:
    """Avalanche 0.6.0 AR1 (random initial weights) on the same stream; runs in the Avalanche venv."""
    import warnings

    import numpy as np
    import torch
    from torch.utils.data import Dataset

    warnings.filterwarnings("ignore")
    import avalanche.training.supervised.ar1 as ar1_module
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_classification_dataset
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.models import MobilenetV1
    from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

    class RandomInitMobilenetV1(MobilenetV1):
        """Avalanche's MobilenetV1 without the ImageNet download (AR1 asks for pretrained=True)."""

        def __init__(self, pretrained=True, latent_layer_num=20):
            super().__init__(pretrained=False, latent_layer_num=latent_layer_num)

    ar1_module.MobilenetV1 = RandomInitMobilenetV1

    folder = Path(args.stream)
    index = json.loads((folder / "stream.json").read_text())
    frames = np.load(folder / "frames.npy", mmap_mode="r")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    class Frames(Dataset):
        """uint8 frames -> normalised float tensors per item (torchvision ToTensor + Normalize)."""

        def __init__(self, entry):
            self.rows = np.asarray(entry["rows"])
            self.targets = [int(y) for y in entry["labels"]]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            x = torch.from_numpy(np.array(frames[self.rows[i]])).permute(2, 0, 1).float().div_(255.0)
            return (x - mean) / std, self.targets[i]

    def av(entry):
        ds = Frames(entry)
        return _make_taskaware_classification_dataset(ds, task_labels=0, targets=ds.targets)

    bench = benchmark_from_datasets(train=[av(e) for e in index["batches"]], test=[av(index["test"])])

    class Counter(SupervisedPlugin):
        """Rows per training iteration and the true labels of the first epoch in loader order."""

        def __init__(self):
            super().__init__()
            self.rows, self.first_epoch_labels = 0, []

        def before_training_exp(self, strategy, **kw):
            self.rows, self.first_epoch_labels = 0, []

        def before_training_iteration(self, strategy, **kw):
            if strategy.clock.train_exp_epochs == 0:     # before AR1 appends the replay labels
                self.first_epoch_labels.append(strategy.mb_y.detach().clone().cpu())

        def after_training_iteration(self, strategy, **kw):
            self.rows += int(strategy.mb_y.shape[0])

    counter = Counter()

    class MeasuredAR1(ar1_module.AR1):
        """AR1, plus a count of the replay labels it stores wrongly (same random draw, RNG restored)."""

        mismatch: list = []

        def _after_training_exp(self, **kw):
            n = self.cur_acts.size(0)
            h = min(self.rm_sz // (self.clock.train_exp_counter + 1), n)
            state = torch.get_rng_state()
            idx = torch.randperm(n)[:h]           # the draw AR1 is about to make
            torch.set_rng_state(state)
            stored = torch.tensor([self.experience.dataset.targets[i] for i in idx])
            true = torch.cat(counter.first_epoch_labels)[idx]
            self.mismatch.append(float((stored != true).float().mean()))
            super()._after_training_exp(**kw)

    torch.manual_seed(args.seed)
    peaks = {}
    strategy = MeasuredAR1(
        lr=args.lr_first, inc_lr=args.lr, momentum=0.9, l2=0.0005, train_epochs=int(args.first_epochs),
        rm_sz=args.memory, train_mb_size=args.minibatch, eval_mb_size=args.minibatch, device="cpu",
        plugins=[counter], evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]))
    batches = []
    for b, exp in enumerate(bench.train_stream):
        strategy.train_epochs = int(args.first_epochs if b == 0 else args.epochs)
        t0 = time.perf_counter()
        strategy.train(exp)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = strategy.eval(bench.test_stream)
        eval_s = time.perf_counter() - t0
        acc = next(v for k, v in metrics.items() if k.startswith("Top1_Acc_Stream"))
        if b == 0:
            peaks["first"] = peak_rss()
            reset_peak_rss()
        batches.append({"train_seconds": train_s, "rows": counter.rows, "eval_seconds": eval_s,
                        "test_accuracy": float(acc), "memory_patterns": int(strategy.rm[0].shape[0]),
                        "memory_bytes": int(strategy.rm[0].numel() * strategy.rm[0].element_size()
                                            + strategy.rm[1].numel() * strategy.rm[1].element_size()),
                        "replay_label_mismatch": MeasuredAR1.mismatch[-1]})
    return {"batches": batches, "avalanche": __import__("avalanche").__version__,
            "peak_rss_first_batch_bytes": peaks["first"], "peak_rss_incremental_bytes": peak_rss()}


def worker_main(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    # The first optimiser of a process imports torch._dynamo (seconds, once): Avalanche's AR1 pays it
    # at construction, outside its timed batches; pay it here for both sides alike.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    out = worker_ours(args) if args.worker == "ours" else worker_avalanche(args)
    out.update(peak_rss_bytes=max(peak_rss(), out["peak_rss_first_batch_bytes"]), threads=torch.get_num_threads(), torch=torch.__version__,
               glibc_tuned=os.environ.get("GLIBC_TUNABLES", "") == TUNED_GLIBC)
    Path(args.result).write_text(json.dumps(out))


# ----------------------------------------------------------------------------------- parent
def ensure_avalanche_venv(venv: Path) -> Path:
    """The Avalanche venv's python; creates the venv and installs Avalanche with pip on first use."""
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = " ".join(AVALANCHE_REQUIREMENTS)
    if python.is_file() and stamp.is_file() and stamp.read_text().strip() == wanted:
        return python
    print(f"compare_avalanche: creating {venv} ({wanted}); takes a few minutes the first time", file=sys.stderr)
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-compile", *AVALANCHE_REQUIREMENTS],
                   check=True)
    stamp.write_text(wanted + "\n")
    return python


def run_worker(args, side: str, python: str, work: Path, rep: int) -> dict:
    result = work / f"result-{side}-{rep}.json"
    cmd = [python, str(Path(__file__).resolve()), "--worker", side, "--work", str(work), "--stream", str(args.stream),
           "--result", str(result)] + args.passthrough
    return run_measured(cmd, worker_env(TUNED_GLIBC if args.glibc == "tuned" else None, work), result,
                        f"rep {rep} {side} worker", "compare_avalanche")


def summarise(run: dict) -> dict:
    """Per-run figures: first batch, median over the incremental batches, final accuracy."""
    first, inc = run["batches"][0], run["batches"][1:]
    s = {
        "first_batch_train_seconds": first["train_seconds"],
        "first_batch_img_s": first["rows"] / first["train_seconds"],
        "incremental_train_seconds": statistics.median(b["train_seconds"] for b in inc),
        "incremental_rows": statistics.median(b["rows"] for b in inc),
        "incremental_img_s": statistics.median(b["rows"] / b["train_seconds"] for b in inc),
        "eval_seconds": statistics.median(b["eval_seconds"] for b in inc),
        "eval_seconds_per_batch": [b["eval_seconds"] for b in run["batches"]],
        "peak_rss_bytes": run["peak_rss_bytes"],
        "peak_rss_incremental_bytes": run["peak_rss_incremental_bytes"],
        # what our side keeps in the test-latent file instead of its heap (0 for Avalanche)
        "test_latents_file_bytes": run.get("test_latents_file_bytes", 0),
        "memory_bytes": run["batches"][-1]["memory_bytes"],
        "final_accuracy": run["batches"][-1]["test_accuracy"],
        "accuracy_per_batch": [b["test_accuracy"] for b in run["batches"]],
        "wall_seconds": run["wall_seconds"],
    }
    if "replay_label_mismatch" in first:
        s["replay_label_mismatch_per_batch"] = [b["replay_label_mismatch"] for b in run["batches"]]
    return s


def _median(values):
    values = list(values)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return statistics.median(values)
    if all(isinstance(v, list) for v in values):
        return [statistics.median(col) for col in zip(*values)]
    return values


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    """The stream, sizes, hyperparameters and environment options (shared with memory_phases.py)."""
    ap.add_argument("--batches", type=int, default=2, help="incremental batches after batch 0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--glibc", choices=("tuned", "default"), default="tuned", help="GLIBC_TUNABLES in the workers")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--first-frames", type=int, default=150, help="frames per batch-0 object (10 objects)")
    ap.add_argument("--new-frames", type=int, default=300)
    ap.add_argument("--test-frames", type=int, default=2249)
    ap.add_argument("--memory", type=int, default=1500)
    ap.add_argument("--minibatch", type=int, default=128)
    ap.add_argument("--epochs", type=float, default=4.0, help="epochs per incremental batch")
    ap.add_argument("--first-epochs", type=float, default=1.0, help="epochs of batch 0 (paper: 4)")
    ap.add_argument("--lr-first", type=float, default=0.01, help="learning rate of batch 0 (both sides)")
    ap.add_argument("--lr", type=float, default=0.001, help="learning rate after batch 0 (both sides)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes for smoke tests (numbers meaningless)")
    ap.add_argument("--work-dir", default=None, help="keep the rendered stream here (default: a temp dir)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(ap)
    ap.add_argument("--reps", type=int, default=2, help="alternations of the two sides")
    ap.add_argument("--venv", default=str(DEFAULT_VENV), help="Avalanche's virtual environment")
    ap.add_argument("--sides", default="ours,avalanche", help="run only some sides, e.g. 'ours' (no ratios then)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stream", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if args.worker:
        worker_main(args)
        return {}
    if args.first_epochs != int(args.first_epochs) or args.epochs != int(args.epochs):
        ap.error("Avalanche trains whole epochs: --epochs and --first-epochs must be integers")
    args.passthrough = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                        ("threads", "memory", "minibatch", "epochs", "first_epochs", "lr_first", "lr", "seed")]
    sides = [s for s in args.sides.split(",") if s]
    sys.path.insert(0, str(HERE.parent / "project_source"))
    sys.path.insert(0, str(HERE))
    from synthetic_stream import StreamSpec, materialise

    pythons = {"ours": sys.executable}
    if "avalanche" in sides:
        pythons["avalanche"] = str(ensure_avalanche_venv(Path(args.venv)))
    tmp = None
    work = Path(args.work_dir) if args.work_dir else Path(tmp := tempfile.mkdtemp(prefix="compare-avalanche-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t_start = time.perf_counter()
        spec = StreamSpec(size=args.size, first_frames=args.first_frames, new_frames=args.new_frames,
                          incremental_batches=args.batches, test_frames=args.test_frames, seed=args.seed)
        args.stream = materialise(spec, work / "stream")
        runs: dict[str, list[dict]] = {s: [] for s in sides}
        for rep in range(args.reps):
            for side in (sides if rep % 2 == 0 else sides[::-1]):
                runs[side].append(run_worker(args, side, pythons[side], work, rep))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    per_run = {s: [summarise(r) for r in rs] for s, rs in runs.items()}
    med = {s: {k: _median(r[k] for r in rs) for k in rs[0]} for s, rs in per_run.items()}
    out = {
        "benchmark": "compare_avalanche_ar1",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
        "glibc": args.glibc, "reps": args.reps,
        "sizes": {"size": args.size, "first_batch_frames": 10 * args.first_frames, "first_epochs": args.first_epochs,
                  "incremental_batches": args.batches, "new_frames": args.new_frames, "memory": args.memory,
                  "epochs": args.epochs, "minibatch": args.minibatch, "test_frames": args.test_frames,
                  "lr_first": args.lr_first, "lr": args.lr, "quick": args.quick},
        "versions": {s: {"torch": runs[s][0]["torch"], **({"avalanche": runs[s][0]["avalanche"]}
                                                         if "avalanche" in runs[s][0] else {})} for s in sides},
        "load": {"load1_before": [r["load1_before"] for rs in runs.values() for r in rs],
                 "other_cores": [round(r["other_cores"], 2) for rs in runs.values() for r in rs]},
        "results": med,
    }
    if {"ours", "avalanche"} <= set(sides):
        o, a = med["ours"], med["avalanche"]
        out["ratios"] = {
            "incremental_throughput_ours_over_avalanche": round(o["incremental_img_s"] / a["incremental_img_s"], 2),
            "incremental_seconds_avalanche_over_ours": round(a["incremental_train_seconds"] / o["incremental_train_seconds"], 2),
            "first_batch_throughput_ours_over_avalanche": round(o["first_batch_img_s"] / a["first_batch_img_s"], 2),
            "eval_seconds_avalanche_over_ours": round(a["eval_seconds"] / o["eval_seconds"], 2),
            "peak_rss_ours_over_avalanche": round(o["peak_rss_bytes"] / a["peak_rss_bytes"], 3),
            "peak_rss_incremental_ours_over_avalanche":
                round(o["peak_rss_incremental_bytes"] / a["peak_rss_incremental_bytes"], 3),
            # the same, counting the test-latent file's page-cache pages as ours
            "peak_rss_incremental_with_test_latents_file_ours_over_avalanche":
                round((o["peak_rss_incremental_bytes"] + o["test_latents_file_bytes"])
                      / a["peak_rss_incremental_bytes"], 3),
            "final_accuracy_ours_minus_avalanche": round(o["final_accuracy"] - a["final_accuracy"], 4),
        }
    out["runs"] = per_run
    out["wall_seconds"] = time.perf_counter() - t_start
    return emit(out, args.out)


if __name__ == "__main__":
    main()
