"""Where each task of a sweep folder stands: finished, running, pending, failed or missing (``sweep status``).

A task is *finished* when its ``summary.json`` exists (and records the experiment's training settings),
*running* / *pending* while Slurm lists it (or, for local runs, while its process lives), *failed* when
it ended with a non-zero exit code or was started and disappeared without a summary, and *missing* when
it never started, or finished with other settings than its experiment's config.
"""
from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .. import launch
from ..config import ConfigError, ExperimentConfig
from ..results import evaluated_batches, read_summary, trained_otherwise
from .schema import SCRIPT, STATES, display
from .tasks import Submission, Task, read_state, read_submissions, read_tasks

_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
_RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"}
_EXIT_WORDS = {
    1: "error (see the log)", 2: "rejected input (see the log)", 130: "interrupted",
    137: "killed (SIGKILL: out of memory or the time limit's hard kill)",
    143: "terminated (scancel, time limit or preemption)",
}


def squeue_tasks(submissions: Sequence[Submission]) -> Optional[dict[int, tuple[str, str]]]:
    """Task index -> (job, squeue state) for the sweep's array jobs still known to Slurm; None without squeue."""
    jobs = {s.job: s.offset for s in submissions if s.launcher == "slurm"}
    if not jobs:
        return {}
    squeue = shutil.which("squeue")
    if squeue is None:
        return None
    try:
        r = subprocess.run([squeue, "-h", "-r", "-u", getpass.getuser(), "-o", "%F|%K|%T"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    found: dict[int, tuple[str, str]] = {}
    for line in r.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3 or parts[0] not in jobs or not parts[1].isdigit():
            continue
        found[jobs[parts[0]] + int(parts[1])] = (f"{parts[0]}_{parts[1]}", parts[2])
    return found


def _alive(state: dict) -> bool:
    """Whether the process of a local task still runs (same host, pid alive and still this script)."""
    if state.get("host") != socket.gethostname() or not state.get("pid", "").isdigit():
        return False
    pid = int(state["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return SCRIPT.encode() in cmdline.read_bytes()
        except OSError:
            return True
    return True


@dataclass
class TaskStatus:
    task: int
    experiment: str
    run: int
    state: str
    job: str = ""
    exit: Optional[int] = None
    batches: int = 0
    log: str = ""
    detail: str = ""


def task_status(sweep_dir: Path, task: Task, state: Optional[dict], queued: Optional[dict],
                config: Optional[ExperimentConfig] = None) -> TaskStatus:
    """Where a task stands. With the experiment's ``config``, a run that finished with another one is not
    finished: missing unless Slurm lists the task (submitting it sets the old run aside:
    :func:`~latent_replay.sweep.run.write_sweep`, :func:`~latent_replay.sweep.run.set_aside_selected`)."""
    run_dir = Path(sweep_dir) / task.experiment / f"run{task.run}"
    st = TaskStatus(task.index, task.experiment, task.run, "missing", batches=evaluated_batches(run_dir))
    if state:
        st.job, st.log = state.get("job", ""), state.get("log", "")
        if state.get("exit", "").lstrip("-").isdigit():
            st.exit = int(state["exit"])
    stale = []
    if (run_dir / "summary.json").is_file():
        summary = read_summary(run_dir) or {}
        stale = trained_otherwise(summary, config) if config is not None else []
        if not stale:
            st.state = "finished"
            acc = summary.get("final_accuracy")
            st.detail = f"final accuracy {acc:.4f}" if isinstance(acc, (int, float)) else ""
            return st
    q = queued.get(task.index) if queued else None
    ended = state is not None and "ended" in state
    # a task that ended may linger in squeue as its own job while Slurm finishes it: its state file
    # counts; but a job Slurm requeued (preemption) keeps its id and waits again: the queue counts
    lingering = ended and q is not None and state.get("job") == q[0] and q[1] not in _PENDING
    if q is not None and not lingering:
        return _queued(st, state, q, ended)
    if stale:   # its state file, if any, is of the attempt that finished
        st.batches, st.exit, st.log = 0, None, ""
        st.detail = (f"finished with another configuration than its experiment's (changed: {', '.join(stale)}); "
                     "submitting it sets that run aside and trains it again")
        return st
    if state is None:
        return st
    return _ended(st) if "ended" in state else _started(st, state, queued)


def _queued(st: TaskStatus, state: Optional[dict], q: tuple[str, str], ended: bool) -> TaskStatus:
    """A task Slurm lists: pending or running."""
    st.state = "pending" if q[1] in _PENDING else "running"
    st.detail = q[1].lower()
    if state is None or state.get("job") != q[0] or ended:   # the state file is of an earlier attempt
        st.log, st.exit = "", None
    st.job = q[0]
    return st


def _ended(st: TaskStatus) -> TaskStatus:
    """A task that ended without a summary: failed, with its exit code in words."""
    st.state = "failed"
    if st.exit == 0:
        st.detail = "ended with exit 0 but wrote no summary.json"
    else:
        st.detail = f"exit {st.exit}: {_EXIT_WORDS.get(st.exit, 'error (see the log)')}" if st.exit is not None \
            else "ended without an exit code"
    return st


def _started(st: TaskStatus, state: dict, queued: Optional[dict]) -> TaskStatus:
    """A task that started and did not record its end: running while its process (or Slurm job) lives."""
    local = not st.job or not re.match(r"^\d+_\d+$", st.job)
    if local:
        if _alive(state):
            st.state, st.detail = "running", f"pid {state.get('pid')} on {state.get('host')}"
        else:
            st.state = "failed"
            st.detail = f"started {state.get('started', '?')} on {state.get('host', '?')}, its process is gone"
    elif queued is None:
        st.state, st.detail = "running", "started; not verified (squeue unavailable)"
    else:
        st.state = "failed"
        st.detail = (f"started {state.get('started', '?')} on {state.get('host', '?')}, no longer in the queue "
                     "(killed without a trace: node failure, SIGKILL, out of memory?)")
    return st


def saved_configs(sweep_dir: Path, tasks: Sequence[Task]) -> dict[str, Optional[ExperimentConfig]]:
    """The saved config of each experiment of ``tasks`` (None where it cannot be read)."""
    configs = {}
    for name in {t.experiment for t in tasks}:
        try:
            configs[name] = ExperimentConfig.load(Path(sweep_dir) / name / launch.CONFIG_FILE)
        except ConfigError:
            configs[name] = None
    return configs


def task_statuses(sweep_dir: Path, tasks: Sequence[Task], configs: dict[str, Optional[ExperimentConfig]],
                  queued: Optional[dict] = None) -> list[TaskStatus]:
    """Every task's status, its run compared with its experiment's config in ``configs``; ``queued``:
    Slurm's view (default: asked for the sweep's recorded submissions)."""
    if queued is None:
        queued = squeue_tasks(read_submissions(sweep_dir))
    return [task_status(sweep_dir, t, read_state(sweep_dir, t.index), queued, configs.get(t.experiment))
            for t in tasks]


def collect_status(sweep_dir: Path) -> list[TaskStatus]:
    sweep_dir = Path(sweep_dir)
    tasks = read_tasks(sweep_dir)
    return task_statuses(sweep_dir, tasks, saved_configs(sweep_dir, tasks))


def count_states(statuses: Sequence[TaskStatus]) -> dict[str, int]:
    return {s: sum(1 for t in statuses if t.state == s) for s in STATES}


def format_status(sweep_dir: Path, statuses: Sequence[TaskStatus]) -> str:
    counts = count_states(statuses)
    head = f"sweep {display(sweep_dir)}: {len(statuses)} task(s): " + ", ".join(f"{counts[s]} {s}" for s in STATES)
    rows = [("experiment", "run", "task", "state", "job", "batches", "detail")]
    for t in statuses:
        detail = t.detail
        if t.state == "failed" and t.log:
            detail += f"; log {display(t.log)}"
        rows.append((t.experiment, str(t.run), str(t.task), t.state, t.job or "-", str(t.batches), detail))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = [head]
    for r in rows:
        cells = [r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].rjust(widths[2]), r[3].ljust(widths[3]),
                 r[4].ljust(widths[4]), r[5].rjust(widths[5]), r[6]]
        lines.append("  ".join(cells).rstrip())
    unfinished = counts["failed"] + counts["missing"]
    if unfinished:
        lines.append(f"{unfinished} task(s) to run again: latent-replay sweep resubmit "
                     f"{shlex.quote(display(sweep_dir))}")
    return "\n".join(lines)
