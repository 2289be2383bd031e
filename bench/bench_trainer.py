"""Cost of one incremental NICv2-391 batch through the suite's own trainer; prints one JSON object.

For every *case* (a replay mode, latent layer, storage dtype, or one speed switch turned off) this
measures, with :class:`latent_replay.train.RunTrainer` itself:

* ``train_seconds``: the trainer's own figure for ``train_batch(1)`` (optimiser set-up, lower-part
  pass, all iterations, memory update) on an incremental batch of ``--new-frames`` (300) new frames
  with a full memory of ``--memory`` (1500) patterns, ``--epochs`` (4) epochs, minibatch
  ``--minibatch`` (128): on NICv2-391 shapes 60 iterations = 21 new + 107 replayed rows each;
* ``train_img_s``: rows trained on (new + replayed, every epoch) per second of ``train_seconds``;
  ``new_frames_s``: new frames learned per second (300 / ``train_seconds``);
* ``eval_seconds``: one evaluation on the ``--test-frames`` (2,249) test list as a later batch pays
  it (median of ``--eval-reps``; with the test-latent cache when the case uses it);
  ``eval_first_seconds``: the evaluation inside ``train_batch(1)``, which also builds the cache;
  ``eval_full_forward_seconds``: the same evaluation with ``cache_test_latents`` off (the whole
  network on every test frame), and ``eval_cache_equal``: whether both gave the same accuracy;
* ``peak_rss_bytes``: the peak resident set size of the process that ran the case (each case runs
  in a fresh process, ``VmHWM``), ``memory_bytes`` / ``memory_patterns``: the replay
  memory after the batch.

Plus the first batch (``first_batch``): ``train_batch(0)`` on the ``--first-frames`` x 10 batch-0
frames for ``--first-epochs`` epochs (whole network learning, memory filled after it), in img/s.

How: the stream (``bench/synthetic_stream.py``: synthetic CORe50 frames at 128x128, rendered once
into a temporary folder and memory-mapped like the suite's frame cache) has batch 0 and one
incremental batch. One process trains batch 0 and saves the network and CWR* head; each case then
runs in its own process: a ``RunTrainer`` with the case's config loads that state, fills its memory
from batch 0 with the trainer's own memory update, and runs ``train_batch(1)`` and ``evaluate()``.
Cases run in the listed order, then in reverse order for the next repetition (``--reps``), and the
JSON gives the median over repetitions (and every value under ``runs``).

Allocator: each case runs with ``GLIBC_TUNABLES`` set to the setting of the Makefile (it must be set
before the process starts), except the ``*glibc-default`` case, which runs without it. Load: for
every case the JSON records the 1-minute load average before it and the CPU time other processes
used while it ran (``other_cores``: their average number of busy cores).

Usage::

    .venv/bin/python bench/bench_trainer.py                 # defaults: about 8 minutes on 2 cores
    .venv/bin/python bench/bench_trainer.py --reps 3 --out bench_trainer.json
    .venv/bin/python bench/bench_trainer.py --cases latent@conv5_4/dw,pool6 --threads 2
    .venv/bin/python bench/bench_trainer.py --quick         # tiny sizes, seconds (smoke test)

Do not run it next to another torch process: two-thread training collapses when a second busy
process shares the two cores (``docs/performance.md``, "Allocator setting and a second busy process").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from procstat import emit, peak_rss, run_measured, worker_env

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "project_source"))
sys.path.insert(0, str(HERE))

#: The Makefile's allocator setting (keep freed memory instead of returning it to the kernel).
TUNED_GLIBC = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736"

#: name -> (config overrides on top of AR1*-free + latent replay at conv5_4/dw, float32, allocator tuned)
CASES: dict[str, tuple[dict, bool]] = {
    "none": ({"replay": "none"}, True),
    "native": ({"replay": "native"}, True),
    "latent@conv5_1/dw": ({"latent_layer": "conv5_1/dw"}, True),
    "latent@conv5_4/dw": ({}, True),
    "latent@conv5_4/dw/float16": ({"latent_dtype": "float16"}, True),
    "latent@conv5_4/dw/uint8": ({"latent_dtype": "uint8"}, True),
    "latent@conv6/dw": ({"latent_layer": "conv6/dw"}, True),
    "latent@pool6": ({"latent_layer": "pool6"}, True),
    "latent@conv5_4/dw/precompute_lower-off": ({"precompute_lower": False}, True),
    "latent@conv5_4/dw/channels_last-off": ({"channels_last": False}, True),
    "latent@conv5_4/dw/glibc-default": ({}, False),
}
QUICK = dict(size=32, first_frames=8, new_frames=30, test_frames=60, memory=40, minibatch=16, epochs=1.0,
             first_epochs=1.0, eval_reps=1)


# ----------------------------------------------------------------------------------------- child
def _base_config(args, work: Path):
    from latent_replay.config import ExperimentConfig

    return ExperimentConfig(
        method="ar1free", scenario=391, replay="latent", latent_layer="conv5_4/dw", latent_dtype="float32",
        replay_memory=args.memory, runs=[0], epochs=args.epochs, epochs_first_batch=args.first_epochs,
        minibatch=args.minibatch, device="cpu", dataset_root=str(work), filelists=str(work), out=str(work / "out"))


def _rows(n_new: int, n_mem: int, cfg, epochs: float) -> int:
    """Rows (new + replayed) the trainer's plan feeds the network in one batch."""
    import numpy as np

    from latent_replay.train import plan_batch

    s = plan_batch(n_new, n_mem, minibatch=cfg.minibatch, epochs=epochs, pad=cfg.fidelity.pad_training_like_caffe,
                   count_memory=cfg.uses_replay, perm=np.arange)
    return int(sum(len(s.new_rows(i)) + len(s.mem_rows(i)) for i in range(s.iterations)))


def _timed(fn, reps: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def child_first(args, work: Path) -> dict:
    """Train batch 0 once; save the network and the method state for the cases."""
    import torch

    from latent_replay.streams.core50 import NICv2Stream
    from latent_replay.train import RunTrainer
    from synthetic_stream import load_stream

    store, scenario = load_stream(args.stream, batches=1)
    cfg = _base_config(args, work)
    rt = RunTrainer(cfg, 0, NICv2Stream(scenario, store), torch.device("cpu"), work, progress=False)
    row = rt.train_batch(0)
    torch.save({"model": rt.model.state_dict(), "method": rt.method.state_dict(), "seen": sorted(rt.seen)},
               work / "batch0.pt")
    rows = _rows(len(scenario.batches[0]), 0, cfg, cfg.epochs_first_batch)
    return {"frames": len(scenario.batches[0]), "epochs": cfg.epochs_first_batch, "rows": rows,
            "train_seconds": row["train_seconds"], "train_img_s": rows / row["train_seconds"],
            "eval_seconds": row["eval_seconds"], "test_accuracy": row["test_accuracy"],
            "peak_rss_bytes": peak_rss()}


def child_case(args, work: Path, name: str) -> dict:
    """One case: a RunTrainer in the state after batch 0, then train_batch(1) and evaluations."""
    import torch

    from latent_replay.streams.core50 import NICv2Stream
    from latent_replay.train import RunTrainer, plan_batch
    from synthetic_stream import load_stream

    overrides, _ = CASES[name]
    store, scenario = load_stream(args.stream, batches=2)
    cfg = _base_config(args, work).replace(**overrides)
    dev = torch.device("cpu")
    rt = RunTrainer(cfg, 0, NICv2Stream(scenario, store), dev, work, progress=False)
    state = torch.load(work / "batch0.pt", map_location=dev)
    rt.model.load_state_dict(state["model"])
    rt.method.load_state_dict(state["method"])
    rt.seen = set(state["seen"])
    if rt.memory is not None:   # the memory update that ends batch 0, through the trainer's own code
        b0 = scenario.batches[0]
        frames0 = torch.from_numpy(store.get(b0.paths))
        sched0 = plan_batch(len(b0), 0, minibatch=cfg.minibatch, epochs=cfg.epochs_first_batch,
                            pad=cfg.fidelity.pad_training_like_caffe, count_memory=cfg.uses_replay, perm=rt._perm)
        rt._update_memory(0, sched0, frames0, torch.from_numpy(b0.labels), None, None)
        del frames0
    rt.batches_done = 1
    rss_setup = peak_rss()

    row = rt.train_batch(1)
    rows = _rows(len(scenario.batches[1]), len(rt.memory) if rt.memory is not None else 0, cfg, cfg.epochs)
    rss_train = peak_rss()
    eval_s, acc = _timed(rt.evaluate, args.eval_reps)
    rt.cfg = cfg.replace(cache_test_latents=False)     # the same evaluation with the switch off
    full_s, acc_full = _timed(rt.evaluate, max(1, args.eval_reps // 2))
    rt.cfg = cfg
    n_new = len(scenario.batches[1])
    return {
        "train_seconds": row["train_seconds"], "rows": rows, "train_img_s": rows / row["train_seconds"],
        "new_frames": n_new, "new_frames_s": n_new / row["train_seconds"],
        "eval_first_seconds": row["eval_seconds"], "eval_seconds": eval_s, "eval_full_forward_seconds": full_s,
        "eval_cache_equal": bool(acc == acc_full), "test_accuracy": acc,
        "memory_patterns": row["memory_patterns"], "memory_bytes": row["memory_bytes"],
        "test_cache_bytes": int(rt.test_cache.nbytes) if rt.test_cache is not None else 0,
        "peak_rss_setup_bytes": rss_setup, "peak_rss_train_bytes": rss_train, "peak_rss_bytes": peak_rss(),
        "split_layer": rt.split_layer, "test_frames": int(len(rt.test_labels)),
    }


def child_main(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # The first optimiser of a process imports torch._dynamo (2-5 s, a one-time cost that a real run
    # pays inside batch 0's train_seconds): pay it here so the timed batches measure training only.
    t0 = time.perf_counter()
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    warm = time.perf_counter() - t0
    work = Path(args.work)
    out = child_first(args, work) if args.child == "first" else child_case(args, work, args.child)
    out["first_optimizer_seconds"] = warm
    out["threads"] = torch.get_num_threads()
    out["glibc_tuned"] = os.environ.get("GLIBC_TUNABLES", "") == TUNED_GLIBC
    Path(args.result).write_text(json.dumps(out))


# ----------------------------------------------------------------------------------------- parent
def run_child(args, stage: str, tuned: bool, work: Path) -> dict:
    result = work / f"result-{stage.replace('/', '_').replace('@', '_')}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--work", str(work), "--result", str(result),
           "--stream", str(args.stream)] + args.passthrough
    return run_measured(cmd, worker_env(TUNED_GLIBC if tuned else None, work), result, f"case {stage!r}",
                        "bench_trainer")


def _median_dict(runs: list[dict]) -> dict:
    out = {}
    for k, v in runs[0].items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            out[k] = v if all(r[k] == v for r in runs) else [r[k] for r in runs]
        else:
            out[k] = statistics.median(r[k] for r in runs)
    return out


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def derived(first: dict, cases: dict) -> dict:
    """Gains of each switch and the figures the issue's targets are stated in."""
    d = {}
    base = cases.get("latent@conv5_4/dw")
    if base:
        for name, key in (("precompute_lower", "latent@conv5_4/dw/precompute_lower-off"),
                          ("channels_last", "latent@conv5_4/dw/channels_last-off"),
                          ("glibc_tunables", "latent@conv5_4/dw/glibc-default")):
            if key in cases:
                d[f"{name}_train_speedup"] = _ratio(cases[key]["train_seconds"], base["train_seconds"])
                d[f"{name}_eval_speedup"] = _ratio(cases[key]["eval_seconds"], base["eval_seconds"])
        d["cache_test_latents_eval_speedup@conv5_4/dw"] = _ratio(base["eval_full_forward_seconds"], base["eval_seconds"])
        for key in ("latent@conv5_4/dw/float16", "latent@conv5_4/dw/uint8"):
            if key in cases:
                d[f"memory_bytes_ratio_float32_over_{key.rsplit('/', 1)[1]}"] = _ratio(
                    base["memory_bytes"], cases[key]["memory_bytes"])
        if "native" in cases:
            d["latent_over_native_train_speedup"] = _ratio(cases["native"]["train_seconds"], base["train_seconds"])
    if "latent@pool6" in cases:
        p = cases["latent@pool6"]
        d["cache_test_latents_eval_speedup@pool6"] = _ratio(p["eval_full_forward_seconds"], p["eval_seconds"])
    return d


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of: {', '.join(CASES)}")
    ap.add_argument("--reps", type=int, default=1, help="repetitions of every case (order reversed each time)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--size", type=int, default=128, help="frame side")
    ap.add_argument("--first-frames", type=int, default=150, help="frames per batch-0 object (10 objects)")
    ap.add_argument("--first-epochs", type=float, default=1.0, help="epochs of batch 0 (paper: 4)")
    ap.add_argument("--new-frames", type=int, default=300, help="new frames of the incremental batch")
    ap.add_argument("--test-frames", type=int, default=2249)
    ap.add_argument("--memory", type=int, default=1500)
    ap.add_argument("--epochs", type=float, default=4.0)
    ap.add_argument("--minibatch", type=int, default=128)
    ap.add_argument("--eval-reps", type=int, default=3, help="timed evaluations per case (median)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for smoke tests (numbers meaningless)")
    ap.add_argument("--work-dir", default=None, help="keep the rendered stream and state here (default: a temp dir)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stream", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if args.child:
        child_main(args)
        return {}

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    args.passthrough = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                        ("size", "first_frames", "first_epochs", "new_frames", "test_frames", "memory", "epochs",
                         "minibatch", "eval_reps")] + ([f"--threads={args.threads}"] if args.threads else [])
    from synthetic_stream import StreamSpec, materialise

    tmp = None
    work = Path(args.work_dir) if args.work_dir else Path(tmp := tempfile.mkdtemp(prefix="bench-trainer-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t_start = time.perf_counter()
        spec = StreamSpec(size=args.size, first_frames=args.first_frames, new_frames=args.new_frames,
                          incremental_batches=1, test_frames=args.test_frames)
        args.stream = materialise(spec, work / "stream")
        print(f"bench_trainer: stream ready in {time.perf_counter() - t_start:.1f}s; running cases", file=sys.stderr)
        first = run_child(args, "first", True, work)
        runs: dict[str, list[dict]] = {c: [] for c in cases}
        for rep in range(args.reps):
            for c in (cases if rep % 2 == 0 else cases[::-1]):
                runs[c].append(run_child(args, c, CASES[c][1], work))
        medians = {c: _median_dict(r) for c, r in runs.items()}
        loads = [r["load1_before"] for rs in runs.values() for r in rs]
        others = [r["other_cores"] for rs in runs.values() for r in rs]
        out = {
            "benchmark": "trainer_incremental_batch",
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": __import__("torch").__version__, "threads": first["threads"],
            "sizes": {"size": args.size, "first_batch_frames": 10 * args.first_frames, "first_epochs": args.first_epochs,
                      "new_frames": args.new_frames, "memory": args.memory, "epochs": args.epochs,
                      "minibatch": args.minibatch, "test_frames": args.test_frames, "quick": args.quick},
            "method": "ar1free", "reps": args.reps,
            "load": {"load1_min": min(loads), "load1_median": statistics.median(loads), "load1_max": max(loads),
                     "other_cores_median": statistics.median(others), "other_cores_max": max(others)},
            "first_batch": first,
            "cases": medians,
            "derived": derived(first, medians),
            "runs": runs,
            "wall_seconds": time.perf_counter() - t_start,
        }
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return emit(out, args.out)


if __name__ == "__main__":
    main()
