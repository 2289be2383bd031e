"""Where the trainer's resident memory goes, phase by phase; prints one JSON object.

Runs our side of ``compare_avalanche.py`` (AR1*-free + latent replay at conv5_4/dw on the same
synthetic stream, sizes and hyperparameters) in this process while a thread samples
``/proc/self/status`` every 10 ms, and labels each sample with the trainer phase it falls in
(``train_batch(b)``, and nested: the test-latent pass, the lower-part pass, the memory update,
evaluation, the checkpoint). Reported per phase: the highest resident set (``VmRSS``) and its
anonymous (heap) and file-backed (mapped libraries and files) parts; at the end of each phase the
glibc heap figures (``mallinfo2``: arena size, bytes in use, bytes free) where glibc provides them;
and the peak of batch 0 and of the incremental batches (``VmHWM``, reset after batch 0).

Usage (the Makefile's allocator setting is applied by re-executing when it is not set)::

    .venv/bin/python bench/memory_phases.py --out memory.json          # about 1.5 minutes
    .venv/bin/python bench/memory_phases.py --set inference_chunk=64   # a config switch changed
    .venv/bin/python bench/memory_phases.py --quick                    # tiny sizes, smoke tests
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "project_source"))

from compare_avalanche import QUICK, TUNED_GLIBC, add_run_arguments, worker_ours  # noqa: E402
from procstat import emit, peak_rss, proc_status  # noqa: E402

from latent_replay.utils import libc_function, release_free_memory  # noqa: E402

#: RunTrainer methods whose time is a phase of its own (nested ones show as ``outer>inner``).
PHASES = ("train_batch", "_ensure_test_cache", "_lower_pass", "_update_memory", "evaluate", "save_checkpoint")
MB = 1 << 20


def status_mb() -> dict:
    return {k: v // MB for k, v in proc_status("VmRSS", "RssAnon", "RssFile").items()}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_mb() -> dict | None:
    """glibc heap: arena (main + thread arenas), mmapped blocks, in use, free; None without glibc."""
    fn = libc_function("mallinfo2")
    if fn is None:
        return None
    fn.restype = _MallInfo2
    m = fn()
    return {"arena": m.arena // MB, "mmapped": m.hblkhd // MB, "in_use": m.uordblks // MB, "free": m.fordblks // MB}


class PhaseSampler:
    """Samples the resident set in a thread; :meth:`instrument` labels samples with trainer phases."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.phase, self.stop = interval, "start", threading.Event()
        self.lock = threading.Lock()   # the sampler thread and the phase ends both record
        self.peaks: dict[str, dict] = {}
        self.ends: list[dict] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _record(self):
        with self.lock:
            s, peak = status_mb(), self.peaks.setdefault(self.phase, {"rss": 0, "anon": 0, "file": 0, "samples": 0})
            peak["rss"], peak["anon"] = max(peak["rss"], s["VmRSS"]), max(peak["anon"], s["RssAnon"])
            peak["file"] = max(peak["file"], s["RssFile"])
            peak["samples"] += 1

    def _run(self):
        while not self.stop.is_set():
            self._record()
            time.sleep(self.interval)

    def instrument(self, cls) -> None:
        for name in PHASES:
            setattr(cls, name, self._wrap(getattr(cls, name), name))

    def _wrap(self, fn, name):
        sampler = self

        @functools.wraps(fn)
        def wrapped(trainer, *args, **kwargs):
            outer = sampler.phase
            label = f"{name}({args[0]})" if name == "train_batch" else name
            sampler.phase = label if name == "train_batch" else f"{outer}>{label}"
            try:
                return fn(trainer, *args, **kwargs)
            finally:
                sampler._record()
                sampler.ends.append({"phase": sampler.phase, **status_mb(), "heap": heap_mb()})
                sampler.phase = f"after {label}" if name == "train_batch" else outer

        return wrapped

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(ap)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="a config value of our side, e.g. inference_chunk=64 or release_memory=false")
    args = ap.parse_args(argv)
    want = TUNED_GLIBC if args.glibc == "tuned" else None
    if os.environ.get("GLIBC_TUNABLES") != want:   # glibc reads it at start: re-execute with it
        env = dict(os.environ)
        env.pop("GLIBC_TUNABLES", None)
        env.update({"GLIBC_TUNABLES": want} if want else {})
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    try:
        args.overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    except ValueError as exc:
        ap.error(f"--set takes KEY=JSON, e.g. inference_chunk=64 ({exc})")

    import torch

    from latent_replay.train import RunTrainer
    from synthetic_stream import StreamSpec, materialise

    torch.set_num_threads(args.threads)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)   # the one-time optimiser import, as the comparison
    with tempfile.TemporaryDirectory(prefix="memory-phases-") as tmp:
        work = Path(args.work_dir or tmp)
        spec = StreamSpec(size=args.size, first_frames=args.first_frames, new_frames=args.new_frames,
                          incremental_batches=args.batches, test_frames=args.test_frames, seed=args.seed)
        args.stream, args.work = materialise(spec, work / "stream"), str(work)
        release_free_memory()   # rendering the stream is not the trainer's: start from what it left
        sampler = PhaseSampler()
        sampler.instrument(RunTrainer)
        start = status_mb()
        with sampler:
            run = worker_ours(args)
    out = {
        "benchmark": "memory_phases", "threads": args.threads, "glibc": args.glibc, "overrides": args.overrides,
        "sizes": {k: getattr(args, k) for k in ("size", "first_frames", "new_frames", "batches", "test_frames",
                                                "memory", "minibatch", "epochs", "first_epochs", "quick")},
        "rss_at_start_mb": start,
        "peak_rss_first_batch_mb": run["peak_rss_first_batch_bytes"] // MB,
        "peak_rss_incremental_mb": run["peak_rss_incremental_bytes"] // MB,
        "peak_rss_mb": max(peak_rss(), run["peak_rss_first_batch_bytes"]) // MB,
        "train_seconds": [round(b["train_seconds"], 2) for b in run["batches"]],
        "eval_seconds": [round(b["eval_seconds"], 2) for b in run["batches"]],
        "final_accuracy": run["batches"][-1]["test_accuracy"],
        "phases": [{"phase": p, **v} for p, v in sampler.peaks.items()],
        "phase_ends": sampler.ends,
    }
    return emit(out, args.out)


if __name__ == "__main__":
    main()
