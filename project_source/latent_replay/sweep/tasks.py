"""The sweep folder's task files: ``tasks.tsv`` (task indices), ``submissions.tsv`` and ``state/task<I>``,
and the array specifications the tasks are submitted with."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..data.filelists import atomic_write_text
from ..utils import format_int_list
from .schema import STATE_DIR, SUBMISSIONS, TASKS_FILE, SweepError


@dataclass(frozen=True)
class Task:
    index: int
    experiment: str
    run: int


def read_tasks(sweep_dir: Path) -> list[Task]:
    path = Path(sweep_dir) / TASKS_FILE
    if not path.is_file():
        raise SweepError(f"{sweep_dir}: not a sweep folder (no {TASKS_FILE}; `latent-replay sweep SWEEP_FILE` "
                         "writes it)")
    tasks, lines = [], {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if n == 1 or not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            raise SweepError(f"{path}:{n}: expected 'task<TAB>experiment<TAB>run', got {line!r}")
        task = Task(int(parts[0]), parts[1], int(parts[2]))
        for key in (task.index, (task.experiment, task.run)):
            if key in lines:
                raise SweepError(f"{path}:{n}: {'task ' + str(key) if key == task.index else 'experiment and run'} "
                                 f"already on line {lines[key]}")
            lines[key] = n
        tasks.append(task)
    if not tasks:
        raise SweepError(f"{path}: no tasks (the file was emptied; writing the sweep again makes it)")
    return tasks


def tasks_text(tasks: Sequence[Task]) -> str:
    return "task\texperiment\trun\n" + "".join(f"{t.index}\t{t.experiment}\t{t.run}\n" for t in tasks)


def assign_tasks(sweep_dir: Path, experiments: Sequence[str], runs: Sequence[int]) -> list[Task]:
    """One task per experiment and run; a pair keeps the index it had in the folder's tasks.tsv, and an
    index is never given to another pair (state files and logs refer to it)."""
    sweep_dir = Path(sweep_dir)
    known: dict[tuple[str, int], int] = {}
    used = -1
    if (sweep_dir / TASKS_FILE).is_file():
        for t in read_tasks(sweep_dir):
            known[(t.experiment, t.run)] = t.index
            used = max(used, t.index)
    state_dir = sweep_dir / STATE_DIR
    if state_dir.is_dir():
        for p in state_dir.glob("task*"):
            if p.name[4:].isdigit():
                used = max(used, int(p.name[4:]))
    tasks = []
    for exp in experiments:
        for run in runs:
            index = known.get((exp, run))
            if index is None:
                used += 1
                index = used
            tasks.append(Task(index, exp, run))
    return sorted(tasks, key=lambda t: t.index)


def array_spec(indices: Iterable[int], throttle: Optional[int] = None) -> str:
    """``0-3,7,9-11`` (plus ``%N``) from task indices."""
    return format_int_list(indices) + (f"%{throttle}" if throttle else "")


def chunks(indices: Iterable[int], max_array_size: int) -> list[tuple[int, list[int]]]:
    """(offset, array indices) per array job: array indices stay below MaxArraySize, task = offset + index."""
    groups: dict[int, list[int]] = {}
    for i in sorted(set(indices)):
        offset = (i // max_array_size) * max_array_size
        groups.setdefault(offset, []).append(i - offset)
    return sorted(groups.items())


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_state(sweep_dir: Path, index: int) -> Optional[dict]:
    """``state/task<I>``, written by the task itself: started (job, host, pid, log), then ended (exit code)."""
    path = Path(sweep_dir) / STATE_DIR / f"task{index}"
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    state = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            state[key] = value
    return state or None


@dataclass
class Submission:
    job: str
    launcher: str
    offset: int
    array: str
    submitted: str


def read_submissions(sweep_dir: Path) -> list[Submission]:
    path = Path(sweep_dir) / SUBMISSIONS
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        parts = line.split("\t")
        if n == 0 or len(parts) != 5 or not parts[2].isdigit():
            continue
        out.append(Submission(parts[0], parts[1], int(parts[2]), parts[3], parts[4]))
    return out


def add_submission(sweep_dir: Path, sub: Submission) -> None:
    path = Path(sweep_dir) / SUBMISSIONS
    old = path.read_text(encoding="utf-8") if path.is_file() else "job\tlauncher\toffset\tarray\tsubmitted\n"
    atomic_write_text(path, old + f"{sub.job}\t{sub.launcher}\t{sub.offset}\t{sub.array}\t{sub.submitted}\n")
