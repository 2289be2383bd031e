"""The two launchers of a sweep's tasks: ``slurm`` (``sbatch`` job arrays of ``sweep.sbatch``) and ``local``
(the same script here, one task per GPU at a time, or one after the other on CPU)."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import click

from .schema import LOG_DIR, SCRIPT, SlurmOptions, SweepError, display
from .tasks import Submission, Task, add_submission, array_spec, chunks, now

NO_SBATCH = ("sbatch not found: submit from a Slurm login node, or use --launcher local (or --dry-run to see the "
             "script)")


def sbatch_commands(sweep_dir: Path, indices: Sequence[int], slurm: SlurmOptions) -> list[tuple[int, list[str]]]:
    """(offset, sbatch argv) per array job."""
    script = str(Path(sweep_dir) / SCRIPT)
    out = []
    for offset, ids in chunks(indices, slurm.max_array_size):
        cmd = ["sbatch", "--parsable", f"--array={array_spec(ids, slurm.throttle)}"]
        if offset:
            cmd.append(f"--export=ALL,LATENT_REPLAY_TASK_OFFSET={offset}")
        out.append((offset, cmd + [script]))
    return out


def submit_slurm(sweep_dir: Path, indices: Sequence[int], slurm: SlurmOptions,
                 echo: Callable[[str], None] = click.echo) -> list[str]:
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SweepError(NO_SBATCH)
    jobs = []
    sizes = [len(ids) for _, ids in chunks(indices, slurm.max_array_size)]
    for (offset, cmd), size in zip(sbatch_commands(sweep_dir, indices, slurm), sizes):
        try:
            r = subprocess.run([sbatch, *cmd[1:]], capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SweepError(f"sbatch could not be run ({exc})") from None
        if r.returncode != 0:
            why = (r.stderr.strip() or r.stdout.strip()).splitlines()
            raise SweepError(f"sbatch failed (exit {r.returncode}): {why[-1] if why else 'no message'}")
        job = r.stdout.strip().split(";")[0]
        if not job.isdigit():
            raise SweepError(f"sbatch printed {r.stdout.strip()!r} instead of a job id")
        array = cmd[2].removeprefix("--array=")
        add_submission(sweep_dir, Submission(job, "slurm", offset, array, now()))
        jobs.append(job)
        echo(f"submitted job {job}: array {array} ({size} task(s)); logs in {display(Path(sweep_dir) / LOG_DIR)}")
    return jobs


def local_gpus(device: str) -> list[Optional[str]]:
    """One worker per GPU (their ids for CUDA_VISIBLE_DEVICES), or a single CPU worker."""
    if device == "cpu":
        return [None]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return ids or [None]
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return [None]
        n = sum(1 for ln in r.stdout.splitlines() if ln.startswith("GPU ")) if r.returncode == 0 else 0
        return [str(i) for i in range(n)] or [None]
    return [None]


def _run_task(sweep_dir: Path, job: str, task: Task, gpu: Optional[str]) -> tuple[Path, int]:
    """One task through the job script, its output in ``logs/<job>_<task>.out``; (log, exit code)."""
    log = sweep_dir / LOG_DIR / f"{job}_{task.index}.out"
    env = {**os.environ, "LATENT_REPLAY_JOB": job, "LATENT_REPLAY_TASK_LOG": str(log)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = env["LATENT_REPLAY_TASK_GPUS"] = gpu
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as fh:
        code = subprocess.run(["bash", str(sweep_dir / SCRIPT), str(task.index)], stdout=fh,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env).returncode
    return log, code


def run_local(sweep_dir: Path, tasks: Sequence[Task], gpus: Sequence[Optional[str]],
              echo: Callable[[str], None] = click.echo) -> list[tuple[Task, int]]:
    """Run tasks on this machine through the same script, one per GPU at a time (or one after the other)."""
    sweep_dir = Path(sweep_dir)
    job = f"local-{os.getpid()}"
    add_submission(sweep_dir, Submission(job, "local", 0, array_spec(t.index for t in tasks), now()))
    pending = list(tasks)
    results: list[tuple[Task, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    where = "GPU " + ", ".join(g for g in gpus if g is not None) if gpus != [None] else "CPU, one task at a time"
    echo(f"running {len(tasks)} task(s) here ({where}); logs in {display(sweep_dir / LOG_DIR)}")

    def worker(gpu: Optional[str]) -> None:
        while not stop.is_set():
            with lock:
                if not pending:
                    return
                task = pending.pop(0)
            log, code = _run_task(sweep_dir, job, task, gpu)
            with lock:
                results.append((task, code))
                word = "finished" if code == 0 else f"failed (exit {code}; log {display(log)})"
                echo(f"[{len(results)}/{len(tasks)}] task {task.index}: {task.experiment} run {task.run} {word}")

    threads = [threading.Thread(target=worker, args=(g,), daemon=True) for g in gpus]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop.set()   # the running tasks got the Ctrl-C themselves and record it
        for t in threads:
            t.join()
        raise
    return results
