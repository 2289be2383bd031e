"""Stored-latent precision vs accuracy on the demo scenario; prints one JSON object.

Issue #8's uint8 target: storing the replayed latents as uint8 (per-channel affine quantisation)
divides the replay memory's bytes by 4 against float32, and the final accuracy must stay within one
point. This trains the demo's latent-replay experiment (``latent_replay.demo``: synthetic CORe50 at
64x64, NICv2-391, AR1*-free with latent replay at conv5_4/dw, memory 300, the demo's training
settings) once per ``--dtypes`` entry and ``--runs`` run, everything else identical (same seed, data
and schedule), and reports per dtype the final and average accuracy of every run, their means, the
replay memory bytes and the difference to float32.

Usage::

    .venv/bin/python bench/latent_dtype_accuracy.py                       # runs 0-2, ~25 min on 2 cores
    .venv/bin/python bench/latent_dtype_accuracy.py --runs 0 --out dtype.json
    .venv/bin/python bench/latent_dtype_accuracy.py --quick               # tiny scenario, smoke test
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "project_source"))
sys.path.insert(0, str(HERE))

from procstat import emit  # noqa: E402


def main(argv=None) -> dict:
    from latent_replay.demo import DEMO_EXPERIMENTS, demo_configs, prepare_data
    from latent_replay.train import Trainer
    from latent_replay.utils import parse_int_list

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtypes", default="float32,uint8", help="comma-separated latent_dtype values")
    ap.add_argument("--runs", default="0-2", help="runs of the demo scenario (e.g. 0 or 0-4)")
    ap.add_argument("--work-dir", default=None,
                    help="keep data and results here (default: a temp dir); finished runs there are reused")
    ap.add_argument("--quick", action="store_true", help="first 3 batches only, 1 run (numbers meaningless)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    args = ap.parse_args(argv)
    dtypes = [d for d in args.dtypes.split(",") if d]
    try:
        runs = [0] if args.quick else parse_int_list(args.runs, name="--runs")
    except ValueError as exc:
        ap.error(str(exc))
    logging.basicConfig(level=logging.WARNING)

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dtype-bench-") as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        root, lists = prepare_data(work)
        latent_exp = DEMO_EXPERIMENTS[0]
        base = next(c for c in demo_configs(work, root, lists) if c.replay == latent_exp["replay"])
        results = {}
        for dtype in dtypes:
            cfg = base.replace(latent_dtype=dtype, runs=runs, name=f"latent_{dtype}", device="cpu",
                               max_batches=3 if args.quick else None, epochs_first_batch=2 if args.quick
                               else base.epochs_first_batch)
            trainer = Trainer(cfg, progress=False)
            trainer.run_all()            # runs already finished in --work-dir are reused
            per_run = [json.loads((trainer.experiment_dir / f"run{r}" / "summary.json").read_text()) for r in runs]
            results[dtype] = {
                "final_accuracy": [s["final_accuracy"] for s in per_run],
                "average_accuracy": [s["average_accuracy"] for s in per_run],
                "final_accuracy_mean": statistics.fmean(s["final_accuracy"] for s in per_run),
                "average_accuracy_mean": statistics.fmean(s["average_accuracy"] for s in per_run),
                "memory_bytes": per_run[0]["memory_bytes"],
                "train_seconds": [s["train_seconds"] for s in per_run],
            }
    out = {"benchmark": "latent_dtype_accuracy", "scenario": "demo (synthetic CORe50 64x64, NICv2-391)",
           "experiment": dict(latent_exp), "runs": runs, "quick": args.quick, "results": results}
    if "float32" in results:
        ref = results["float32"]
        out["vs_float32"] = {
            d: {"final_accuracy_points": round(100 * (r["final_accuracy_mean"] - ref["final_accuracy_mean"]), 2),
                "average_accuracy_points": round(100 * (r["average_accuracy_mean"] - ref["average_accuracy_mean"]), 2),
                "memory_ratio": round(ref["memory_bytes"] / r["memory_bytes"], 3)}
            for d, r in results.items() if d != "float32"}
    out["wall_seconds"] = time.perf_counter() - t_start
    return emit(out, args.out)


if __name__ == "__main__":
    main()
