"""``latent-replay sweep``: a grid of experiments as one Slurm job array (or run here), its status, resubmission.

    latent-replay sweep SWEEP.json|yaml [--launcher slurm|local] [--container none|docker|apptainer]
                                        [--out DIR] [--dry-run] [--force]
    latent-replay sweep status DIR [--json]
    latent-replay sweep resubmit DIR [--launcher slurm|local] [--dry-run]

A sweep file names a dataset, a ``grid`` (lists of values of any config key), ``fixed`` keys and the
``runs``; every combination becomes one experiment folder written by the launcher of
``prepare_experiment.py`` (:func:`latent_replay.launch.plan_experiment`: same checks, same
``exp_configuration.json`` and ``run_experiment.sh``), and every experiment x run becomes one *task*. The
suite does not schedule: ``slurm`` submits one job array (one array task per task), ``local`` runs the
same tasks here, one per GPU or one after the other on CPU. Every task runs the trainer for its run only,
so it resumes from the run's checkpoint when started again.

The sweep folder (``out``)::

    sweep.json              the sweep as expanded (absolute paths); status and resubmit read it
    tasks.tsv               task, experiment, run: one line per task; a task keeps its index for good
    sweep.sbatch            the job-array script (``bash sweep.sbatch TASK`` runs one task here)
    submissions.tsv         one line per submitted array (or local run): job, launcher, offset, array
    state/task<I>           written by the task itself: started (job, host, pid, log), ended (exit code)
    logs/<job>_<task>.out   the output of each attempt (Slurm: ``%A_%a``; local: ``local-<pid>_<task>``)
    <experiment>/           exp_configuration.json, run_experiment.sh, run<R>/ (the trainer's results)

A task is *finished* when its ``summary.json`` exists (and records the experiment's training settings),
*running* / *pending* while Slurm lists it (or, for local runs, while its process lives), *failed* when
it ended with a non-zero exit code or was started and disappeared without a summary, and *missing* when
it never started, or finished with other settings than its experiment's config (submitting it sets
that run aside first).

Modules: :mod:`.schema` (the sweep file), :mod:`.expand` (grid expansion), :mod:`.tasks` (tasks.tsv,
submissions, state files), :mod:`.script` (``sweep.sbatch`` from the template ``job.sbatch.in``),
:mod:`.status`, :mod:`.launchers` (slurm, local), :mod:`.run` (sweep and resubmit), :mod:`.cli`.
"""
from .cli import sweep_command
from .expand import (ARGUMENTS, GLOBAL_ARGUMENTS, NAMED_KEYS, Expansion, Planned, applies, check_existing, combinations,
                     describe_values, expand, launcher_arguments)
from .launchers import local_gpus, run_local, sbatch_commands, submit_slurm
from .run import resubmit, run_sweep, set_aside_selected, write_sweep
from .schema import (CONTAINERS, DEFAULT_OUT, DEFAULT_RUNS, LAUNCHERS, LOG_DIR, RESERVED, SCRIPT, STATE_DIR, STATES,
                     SUBMISSIONS, SWEEP_FORMAT, SWEEP_JSON, SWEEP_VERSION, TASKS_FILE, TOP_KEYS, SlurmOptions, Sweep,
                     SweepError, load_sweep, parse_slurm, parse_sweep, read_sweep_file, stored_sweep)
from .script import ScriptSpec, render_sbatch, script_spec
from .status import TaskStatus, collect_status, count_states, format_status, squeue_tasks, task_status, task_statuses
from .tasks import (Submission, Task, add_submission, array_spec, assign_tasks, chunks, read_state, read_submissions,
                    read_tasks, tasks_text)

__all__ = [
    "sweep_command", "ARGUMENTS", "GLOBAL_ARGUMENTS", "NAMED_KEYS", "Expansion", "Planned", "applies",
    "check_existing", "combinations", "describe_values", "expand", "launcher_arguments", "local_gpus", "run_local",
    "sbatch_commands", "submit_slurm", "resubmit", "run_sweep", "set_aside_selected", "write_sweep", "CONTAINERS",
    "DEFAULT_OUT", "DEFAULT_RUNS", "LAUNCHERS", "LOG_DIR", "RESERVED", "SCRIPT", "STATE_DIR", "STATES", "SUBMISSIONS",
    "SWEEP_FORMAT", "SWEEP_JSON", "SWEEP_VERSION", "TASKS_FILE", "TOP_KEYS", "SlurmOptions", "Sweep", "SweepError",
    "load_sweep", "parse_slurm", "parse_sweep", "read_sweep_file", "stored_sweep", "ScriptSpec", "render_sbatch",
    "script_spec", "TaskStatus", "collect_status", "count_states", "format_status", "squeue_tasks", "task_status",
    "task_statuses", "Submission", "Task", "add_submission", "array_spec", "assign_tasks", "chunks", "read_state",
    "read_submissions", "read_tasks", "tasks_text",
]
