"""The whole NICv2-391 run 0 (AR1*-free + latent replay at conv5_4/dw) through the trainer; one JSON object.

Issue #8's GPU target: run 0 of NICv2-391 with AR1*-free and latent replay in under 2 minutes of
training on one H100-class GPU. This script measures it on whatever device it is given, with no
download: it renders a NICv2-391-shaped synthetic CORe50 at 128x128 straight into a frame array
(``bench/synthetic_stream.py`` with all 50 objects: batch 0 = session 1 of the ten batch-0 objects,
300 frames each; 390 incremental batches = the other 390 (session, object) videos of the training
sessions, 300 frames each, shuffled; the reduced 2,249-frame test list from sessions 3, 7 and 10),
about 122,000 frames (6 GB at 128x128, rendered in ~1.5 minutes on one core, kept in ``--work-dir``
for the next call), and trains run 0 with the suite's default settings for this experiment (the
paper's: 4 epochs per batch, minibatch 128, memory 1500, Caffe preprocessing, random initial weights).

Reported: the trainer's own training seconds (the sum of ``train_seconds`` over the batches, which
excludes evaluation and the test-latent pass), the first batch, the median incremental batch, the
evaluation seconds, the final accuracy, the device and its peak allocated memory. With
``--batches N`` (fewer than 390 incremental batches) it also extrapolates the full run as first batch
+ 390 x median incremental batch, which is how a CPU can give an estimate.

Usage::

    .venv/bin/python bench/full_run.py --device cuda --work-dir /tmp/nicv2 --out full_run.json
    .venv/bin/python bench/full_run.py --device cpu --batches 3                  # a CPU estimate
    .venv/bin/python bench/full_run.py --quick                                   # smoke test
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "project_source"))

from procstat import emit  # noqa: E402

FULL_BATCHES = 390
QUICK = dict(size=32, first_frames=4, new_frames=8, batches=2, test_frames=30, memory=20, epochs=1.0)
TARGET_SECONDS = 120.0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--batches", type=int, default=FULL_BATCHES, help="incremental batches (390 = the whole run)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--latent-layer", default="conv5_4/dw")
    ap.add_argument("--memory", type=int, default=1500)
    ap.add_argument("--epochs", type=float, default=4.0, help="epochs per batch (batch 0 included)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--first-frames", type=int, default=300, help="frames per batch-0 object (10 objects)")
    ap.add_argument("--new-frames", type=int, default=300)
    ap.add_argument("--test-frames", type=int, default=2249)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes for smoke tests (numbers meaningless)")
    ap.add_argument("--work-dir", default=None, help="keep the rendered stream here (default: a temp dir)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    ap.add_argument("--tf32", action="store_true", help="cuda_reproducible: false (TF32 and cuDNN's autotuner; "
                    "default: IEEE float32, deterministic algorithms)")
    args = ap.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if not 1 <= args.batches <= FULL_BATCHES:
        ap.error(f"--batches must be in 1..{FULL_BATCHES}, got {args.batches}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from latent_replay.config import ExperimentConfig
    from latent_replay.streams.core50 import NICv2Stream
    from latent_replay.train import CHECKPOINT, RunTrainer, resolve_device
    from synthetic_stream import StreamSpec, load_stream, materialise

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="full-run-") as tmp:
        work = Path(args.work_dir or tmp)
        t0 = time.perf_counter()
        spec = StreamSpec(size=args.size, first_frames=args.first_frames, new_frames=args.new_frames,
                          incremental_batches=args.batches, test_frames=args.test_frames, seed=args.seed, objects=50)
        store, scenario = load_stream(materialise(spec, work / "stream"))
        render_seconds = time.perf_counter() - t0
        out_dir = work / "run0"
        for stale in (out_dir / CHECKPOINT, out_dir / "metrics.csv"):   # always a fresh run
            stale.unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg = ExperimentConfig(method="ar1free", scenario=391, replay="latent", latent_layer=args.latent_layer,
                               replay_memory=args.memory, runs=[0], epochs=args.epochs, epochs_first_batch=args.epochs,
                               device=args.device, seed=args.seed, dataset_root=str(work), filelists=str(work),
                               out=str(work), checkpoint_every=FULL_BATCHES + 1,   # one checkpoint, at the end
                               cuda_reproducible=not args.tf32)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t1 = time.perf_counter()
        summary = RunTrainer(cfg, 0, NICv2Stream(scenario, store), device, out_dir, progress=True).train()
        wall = time.perf_counter() - t1
        rows = summary_rows(out_dir)
    train = [r["train_seconds"] for r in rows]
    incremental = statistics.median(train[1:]) if len(train) > 1 else None
    measured = sum(train)
    full = measured if args.batches == FULL_BATCHES else train[0] + FULL_BATCHES * (incremental or 0.0)
    out = {
        "benchmark": "full_run_nicv2_391",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "cuda_reproducible": cfg.cuda_reproducible,
        "experiment": {"method": "ar1free", "replay": "latent", "latent_layer": args.latent_layer,
                       "memory": args.memory, "epochs": args.epochs, "minibatch": cfg.minibatch, "size": args.size},
        "incremental_batches": args.batches,
        "render_seconds": round(render_seconds, 1),
        "train_seconds": round(measured, 2),
        "first_batch_train_seconds": round(train[0], 2),
        "incremental_train_seconds_median": None if incremental is None else round(incremental, 4),
        "eval_seconds": round(sum(r["eval_seconds"] for r in rows), 2),
        "wall_seconds": round(wall, 1),
        "full_run_train_seconds": round(full, 2),
        "full_run_extrapolated": args.batches != FULL_BATCHES,
        "under_2_minutes": full < TARGET_SECONDS,
        "final_accuracy": summary["final_accuracy"],
        "cuda_peak_allocated_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "quick": args.quick,
    }
    return emit(out, args.out)


def summary_rows(run_dir: Path) -> list[dict]:
    """The per-batch rows of the run's metrics.csv (kind == 'batch'), numbers as floats."""
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in r.items() if k in ("train_seconds", "eval_seconds", "test_accuracy")}
                for r in csv.DictReader(f) if r["kind"] == "batch"]


if __name__ == "__main__":
    main()
