"""``latent-replay sweep SWEEP_FILE`` and ``sweep resubmit DIR``: expand, write the sweep folder, submit the
unfinished tasks (or run them here)."""
from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence

import click

from .. import __version__, launch
from ..config import ExperimentConfig
from ..data.filelists import atomic_write_text
from ..results import set_aside_lines, set_aside_stale
from ..utils import format_int_list
from .expand import Expansion, check_existing, describe_values, expand
from .launchers import NO_SBATCH, local_gpus, run_local, sbatch_commands, submit_slurm
from .schema import (LOG_DIR, SCRIPT, STATE_DIR, STATES, SWEEP_JSON, TASKS_FILE, SlurmOptions, Sweep, SweepError,
                     display, load_sweep, parse_slurm, stored_sweep)
from .script import render_sbatch, script_spec
from .status import TaskStatus, count_states, saved_configs, squeue_tasks, task_statuses
from .tasks import Task, array_spec, assign_tasks, now, read_submissions, read_tasks, tasks_text


def _select(statuses: Sequence[TaskStatus]) -> list[int]:
    return [s.task for s in statuses if s.state in ("failed", "missing")]


def _print_report(expansion: Expansion, tasks: Sequence[Task], statuses: Sequence[TaskStatus],
                  echo: Callable[[str], None]) -> None:
    sweep = expansion.sweep
    echo(f"sweep {sweep.name}: {expansion.combinations or 1} combination(s) -> {len(expansion.experiments)} "
         f"experiment(s) x run(s) {format_int_list(sweep.runs)} = {len(tasks)} task(s) in {display(sweep.out)}")
    if expansion.merged:
        echo(f"  {expansion.merged} combination(s) gave an experiment listed already: "
             f"{', '.join(sorted(expansion.dropped))} left out where it does not apply (a replay's settings where it "
             "does not read them or keeps no memory, a method's params for the other methods)")
    for combo, why in expansion.skipped:
        echo(f"  skipped (invalid) {describe_values(combo)}: {why}")
    for note in expansion.notes:
        echo(f"  note: {note}")
    counts = count_states(statuses)
    echo("  tasks: " + ", ".join(f"{counts[s]} {s}" for s in STATES))


def run_sweep(sweep_file: str | os.PathLike, *, launcher: str = "slurm", container: Optional[str] = None,
              out: Optional[str] = None, dry_run: bool = False, force: bool = False,
              echo: Callable[[str], None] = click.echo) -> int:
    """``latent-replay sweep SWEEP_FILE``: expand, write, submit the unfinished tasks. Returns the exit code."""
    sweep = load_sweep(sweep_file, container=container, out=out)
    if launcher == "slurm" and sweep.device == "cuda" and sweep.slurm.gpus == 0:
        raise SweepError(f"{sweep.source}: device: cuda, but slurm.gpus is 0 (the tasks would get no GPU)")
    if sweep.out.exists() and not sweep.out.is_dir():
        raise SweepError(f"{sweep.source}: out: {sweep.out} is not a folder")
    expansion = expand(sweep)
    replaced = check_existing(expansion, force)
    tasks = assign_tasks(sweep.out, [p.name for p in expansion.experiments], sweep.runs)
    submissions = read_submissions(sweep.out)
    queued = squeue_tasks(submissions) if sweep.out.is_dir() else {}
    statuses = task_statuses(sweep.out, tasks, {p.name: p.plan.config for p in expansion.experiments}, queued)
    _print_report(expansion, tasks, statuses, echo)
    for line in replaced:
        echo(f"  {line}")
    selected = _select(statuses)
    script = render_sbatch(script_spec(expansion, [t.index for t in tasks]))
    python, has_torch = launch.trainer_python()
    if sweep.container == "none" and not has_torch:
        echo(f"  warning: the tasks will train with {python}, which has no PyTorch here (make test creates the "
             "checkout's .venv with everything)")
    if dry_run:
        echo(f"--- {sweep.out / SCRIPT} (dry run: nothing written, nothing submitted) ---")
        echo(script.rstrip("\n"))
        echo("---")
        _echo_plan(sweep.out, selected, launcher, sweep, echo)
        return 0
    if selected and launcher == "slurm" and shutil.which("sbatch") is None:
        raise SweepError(NO_SBATCH)
    write_sweep(expansion, tasks, script, launcher, echo)
    return _launch(sweep.out, selected, tasks, launcher, sweep.slurm, sweep.device, echo)


def write_sweep(expansion: Expansion, tasks: Sequence[Task], script: str, launcher: str,
                echo: Callable[[str], None] = click.echo) -> None:
    """Write the experiments and the sweep's files, saying which finished runs were set aside because
    their experiment's configuration changed (:func:`~latent_replay.results.set_aside_stale`), as it goes."""
    sweep = expansion.sweep
    for p in expansion.experiments:
        if sweep.container == "apptainer":   # prepare_experiment.py has no apptainer run script
            p.plan.config.save(p.plan.config_path)
            set_aside = set_aside_stale(p.plan.experiment_dir, p.plan.config)
        else:
            set_aside = launch.write_plan(p.plan)
        for line in set_aside_lines(set_aside, display):
            echo(f"  {line}")
    (sweep.out / LOG_DIR).mkdir(parents=True, exist_ok=True)
    (sweep.out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    data = sweep.to_dict()
    data.update(launcher=launcher, written=now(), suite=__version__,
                experiments=[p.name for p in expansion.experiments], skipped=[{"values": c, "reason": why} for c, why in expansion.skipped])
    atomic_write_text(sweep.out / SWEEP_JSON, json.dumps(data, indent=2) + "\n")
    atomic_write_text(sweep.out / TASKS_FILE, tasks_text(tasks))
    atomic_write_text(sweep.out / SCRIPT, script)
    os.chmod(sweep.out / SCRIPT, 0o755)


def _echo_sbatch(sweep_dir: Path, selected: Sequence[int], slurm: SlurmOptions, echo: Callable[[str], None]) -> None:
    for _, cmd in sbatch_commands(sweep_dir, selected, slurm):
        echo("would run: " + " ".join(shlex.quote(c) for c in cmd))


def _echo_plan(sweep_dir: Path, selected: Sequence[int], launcher: str, sweep: Sweep,
               echo: Callable[[str], None]) -> None:
    if not selected:
        echo("nothing to submit: every task is finished, running or pending")
    elif launcher == "slurm":
        _echo_sbatch(sweep_dir, selected, sweep.slurm, echo)
    else:
        gpus = local_gpus(sweep.device)
        echo(f"would run {len(selected)} task(s) here, {len(gpus)} at a time: {array_spec(selected)}")


def _launch(sweep_dir: Path, selected: Sequence[int], tasks: Sequence[Task], launcher: str, slurm: SlurmOptions,
            device: str, echo: Callable[[str], None]) -> int:
    if not selected:
        echo("nothing to submit: every task is finished, running or pending")
        return 0
    if launcher == "slurm":
        submit_slurm(sweep_dir, selected, slurm, echo)
        echo(f"follow it with: latent-replay sweep status {shlex.quote(display(sweep_dir))}")
        return 0
    chosen = [t for t in tasks if t.index in set(selected)]
    results = run_local(sweep_dir, chosen, local_gpus(device), echo)
    failed = [t for t, code in results if code != 0]
    if failed:
        raise SweepError(f"{len(failed)} of {len(results)} task(s) failed (latent-replay sweep status "
                         f"{shlex.quote(display(sweep_dir))}; run them again with latent-replay sweep resubmit "
                         f"{shlex.quote(display(sweep_dir))} --launcher local)")
    echo(f"all {len(results)} task(s) finished; figures: latent-replay figures {shlex.quote(display(sweep_dir))}")
    return 0


def set_aside_selected(sweep_dir: Path, tasks: Sequence[Task], selected: Sequence[int],
                       configs: dict[str, Optional[ExperimentConfig]], echo: Callable[[str], None]) -> None:
    """Before the ``selected`` tasks are submitted: set aside the finished runs among them that trained
    otherwise than their experiment's config (the trainer would refuse them), saying so."""
    chosen = set(selected)
    for t in tasks:
        cfg = configs.get(t.experiment)
        if t.index in chosen and cfg is not None:
            for line in set_aside_lines(set_aside_stale(Path(sweep_dir) / t.experiment, cfg, [t.run]), display):
                echo(f"  {line}")


def resubmit(sweep_dir: str | os.PathLike, *, launcher: Optional[str] = None, dry_run: bool = False,
             echo: Callable[[str], None] = click.echo) -> int:
    """Submit the failed and missing tasks of a sweep folder again (its script and tasks.tsv as written)."""
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    data = stored_sweep(sweep_dir)
    launcher = launcher or data.get("launcher", "slurm")
    slurm = parse_slurm(data.get("slurm"), str(sweep_dir / SWEEP_JSON))
    device = data.get("device", "auto")
    if not (sweep_dir / SCRIPT).is_file():
        raise SweepError(f"{sweep_dir}: {SCRIPT} is missing (run latent-replay sweep SWEEP_FILE again)")
    tasks = read_tasks(sweep_dir)
    configs = saved_configs(sweep_dir, tasks)
    statuses = task_statuses(sweep_dir, tasks, configs)
    selected = _select(statuses)
    counts = count_states(statuses)
    echo(f"sweep {display(sweep_dir)}: " + ", ".join(f"{counts[s]} {s}" for s in STATES) +
         f"; {len(selected)} to {'submit' if launcher == 'slurm' else 'run'}")
    if dry_run:
        if selected and launcher == "slurm":
            _echo_sbatch(sweep_dir, selected, slurm, echo)
        elif selected:
            echo(f"would run {len(selected)} task(s) here: {array_spec(selected)}")
        return 0
    set_aside_selected(sweep_dir, tasks, selected, configs, echo)
    return _launch(sweep_dir, selected, tasks, launcher, slurm, device, echo)
