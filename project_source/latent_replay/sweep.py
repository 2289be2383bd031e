"""``latent-replay sweep``: a grid of experiments as one Slurm job array (or run here), its status, resubmission.

    latent-replay sweep SWEEP.json|yaml [--launcher slurm|local] [--container none|docker|apptainer]
                                        [--out DIR] [--dry-run] [--force]
    latent-replay sweep status DIR [--json]
    latent-replay sweep resubmit DIR [--launcher slurm|local] [--dry-run]

A sweep file names a dataset, a ``grid`` (lists of values of any config key), ``fixed`` keys and the
``runs``; every combination becomes one experiment folder written by the launcher of
``prepare_experiment.py`` (:mod:`latent_replay.launch`: same checks, same ``exp_configuration.json`` and
``run_experiment.sh``), and every experiment x run becomes one *task*. The suite does not schedule:
``slurm`` submits one job array (one array task per task), ``local`` runs the same tasks here, one per
GPU or one after the other on CPU. Every task runs the trainer for its run only, so it resumes from the
run's checkpoint when started again.

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
"""
from __future__ import annotations

import getpass
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import click

from . import __version__, launch
from .config import METHOD_ALIASES, REPLAY_ALIASES, ConfigError, ExperimentConfig, set_key
from .data.filelists import atomic_write_text
from .results import read_summary, set_aside_lines, set_aside_stale, trained_otherwise
from .utils import format_int_list, has_control_characters, parse_int_list

SWEEP_FORMAT = "latent-replay-sweep"
SWEEP_VERSION = 1
SWEEP_JSON = "sweep.json"
TASKS_FILE = "tasks.tsv"
SCRIPT = "sweep.sbatch"
SUBMISSIONS = "submissions.tsv"
STATE_DIR = "state"
LOG_DIR = "logs"
CONTAINERS = ("none", "docker", "apptainer")
LAUNCHERS = ("slurm", "local")
STATES = ("finished", "running", "pending", "failed", "missing")
DEFAULT_RUNS = "0-4"
DEFAULT_OUT = "results"
#: Top-level keys of a sweep file.
TOP_KEYS = ("name", "out", "db_path", "filelists", "weights", "runs", "device", "grid", "fixed", "container",
            "image", "nvidia_docker", "slurm")
#: Config keys a sweep sets elsewhere (grid/fixed refuse them and say where they go).
RESERVED = {
    "runs": "the top-level key 'runs'", "out": "the top-level key 'out'",
    "dataset_root": "the top-level key 'db_path'", "filelists": "the top-level key 'filelists'",
    "weights": "the top-level key 'weights'", "device": "the top-level key 'device'",
    "name": "the sweep (experiment names are derived from the grid)", "schema_version": "the suite",
}
#: Config keys passed to the launcher as their own argument (everything else goes through --set).
ARGUMENTS = {"latent_layer": "--latent_layer", "replay_memory": "--replay_memory", "profile": "--profile",
             "max_batches": "--max_batches"}
#: Launcher arguments that are the same for every combination: an error there is the sweep's, not a combination's.
GLOBAL_ARGUMENTS = {"DB_PATH": "db_path", "--filelists": "filelists", "--weights": "weights", "--image": "image",
                    "--out": "out", "--runs": "runs", "--device": "device", "--nvidia_docker": "nvidia_docker"}
#: Keys the default experiment name already encodes; other grid keys are appended to the name.
NAMED_KEYS = ("method", "scenario", "replay", "latent_layer", "replay_memory", "latent_dtype", "profile",
              "glr_profile", "glr.mode", "glr.sampling")
_LAUNCHER_METHOD = {v: k for k, v in METHOD_ALIASES.items()}
_LAUNCHER_REPLAY = {v: k for k, v in REPLAY_ALIASES.items()}
_WORD = re.compile(r"^[^\s'\"\\$`;&|<>(){}]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}"
                   r"|UNLIMITED|unlimited|INFINITE|infinite)$")
_MEM = re.compile(r"^\d+[KMGT]?$")


class SweepError(ValueError):
    """A rejected sweep file or folder: one line naming the file and key (``latent-replay`` prints ``Error: ...``)."""


# ------------------------------------------------------------------------------------ sweep file
@dataclass
class SlurmOptions:
    """How each array task asks Slurm for resources (``slurm`` in the sweep file)."""

    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    #: Time limit per task (Slurm syntax); a task stopped by it resumes from its checkpoint when resubmitted.
    time: Optional[str] = "04:00:00"
    #: GPUs per task (``--gres=gpu[:gpu_type]:N``); 0 = none.
    gpus: int = 1
    gpu_type: Optional[str] = None
    cpus_per_task: int = 4
    mem: Optional[str] = "16G"
    #: At most this many tasks at once (``--array=...%N``); null = as many as Slurm allows.
    throttle: Optional[int] = None
    #: Default ``lr-<sweep name>``.
    job_name: Optional[str] = None
    #: The cluster's MaxArraySize (``scontrol show config``); more tasks are submitted as several arrays.
    max_array_size: int = 1001
    #: Further sbatch options, e.g. ``["--constraint=a100", "--mail-type=FAIL"]``.
    extra: list = field(default_factory=list)
    #: Shell lines run before the trainer, e.g. ``["module load apptainer"]``.
    setup: list = field(default_factory=list)


@dataclass
class Sweep:
    """A validated sweep file; paths absolute."""

    name: str
    out: Path
    db_path: Path
    filelists: Optional[Path] = None
    weights: Optional[Path] = None
    runs: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    device: str = "auto"
    #: One or more grids; the sweep is the union of their combinations.
    grid: list = field(default_factory=lambda: [{}])
    fixed: dict = field(default_factory=dict)
    container: str = "none"
    image: str = ""
    nvidia_docker: str = "new"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    source: str = "sweep"

    @property
    def gpu(self) -> bool:
        """Whether the tasks get GPUs (and the container runtime passes them on)."""
        return self.slurm.gpus > 0 and self.device != "cpu"

    def to_dict(self) -> dict:
        data = {"format": SWEEP_FORMAT, "version": SWEEP_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, SlurmOptions):
                value = asdict(value)
            data[f.name] = value
        return data


def read_sweep_file(path: str | os.PathLike) -> dict:
    """The sweep file as a dict: JSON always, YAML (``.yaml``/``.yml``) when PyYAML is installed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError(f"{path}: sweep file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SweepError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); "
                             "or write the sweep file as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise SweepError(f"{where}: not valid YAML ({what})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SweepError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: expected an object of sweep keys ({', '.join(TOP_KEYS)}), got {type(data).__name__}")
    return data


def _abs(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _string(source: str, key: str, value, *, word: bool = False) -> str:
    if not isinstance(value, str) or not value:
        raise SweepError(f"{source}: {key}: expected a non-empty string, got {value!r}")
    if has_control_characters(value):
        raise SweepError(f"{source}: {key}: {value!r} must be one line without control characters")
    if word and not _WORD.match(value):
        raise SweepError(f"{source}: {key}: {value!r} must be one word without quotes or shell characters")
    return value


def _integer(source: str, key: str, value, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SweepError(f"{source}: {key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _choice(source: str, key: str, value, choices) -> str:
    if value not in choices:
        raise SweepError(f"{source}: {key}: {value!r} is not one of {', '.join(choices)}")
    return value


def parse_slurm(data, source: str) -> SlurmOptions:
    if data is None:
        return SlurmOptions()
    if not isinstance(data, dict):
        raise SweepError(f"{source}: slurm: expected an object, got {type(data).__name__}")
    known = [f.name for f in fields(SlurmOptions)]
    for key in data:
        if key not in known:
            raise SweepError(f"{source}: slurm.{key}: unknown key (known: {', '.join(known)})")
    opts = SlurmOptions(**data)
    for key in ("partition", "account", "qos", "gpu_type", "job_name"):
        if getattr(opts, key) is not None:
            _string(source, f"slurm.{key}", getattr(opts, key), word=True)
    if opts.time is not None and not (isinstance(opts.time, str) and _TIME.match(opts.time)):
        raise SweepError(f"{source}: slurm.time: {opts.time!r} is not a Slurm time limit "
                         "(minutes, HH:MM:SS, D-HH:MM:SS, or null for the partition's default)")
    if opts.mem is not None and not (isinstance(opts.mem, str) and _MEM.match(opts.mem)):
        raise SweepError(f"{source}: slurm.mem: {opts.mem!r} is not a memory size (e.g. 16G, 4000M, or null)")
    _integer(source, "slurm.gpus", opts.gpus, 0)
    _integer(source, "slurm.cpus_per_task", opts.cpus_per_task, 1)
    _integer(source, "slurm.max_array_size", opts.max_array_size, 1)
    if opts.throttle is not None:
        _integer(source, "slurm.throttle", opts.throttle, 1)
    for key in ("extra", "setup"):
        value = getattr(opts, key)
        if not isinstance(value, list) or not all(isinstance(v, str) and v and "\n" not in v for v in value):
            raise SweepError(f"{source}: slurm.{key}: expected a list of one-line strings, got {value!r}")
    for option in opts.extra:
        if not option.startswith("-"):
            raise SweepError(f"{source}: slurm.extra: {option!r} is not an sbatch option (e.g. --constraint=a100)")
    return opts


def _normalise_value(key: str, value):
    if key == "scenario" and isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _check_value(source: str, where: str, key: str, value) -> None:
    """A key and one of its values on their own (unknown keys, wrong types, values outside their choices).

    The other keys take values with which any valid value of this key is accepted, so that only
    combinations of values can fail later (and are then skipped and reported)."""
    top = key.partition(".")[0]
    if top in RESERVED:
        raise SweepError(f"{source}: {where}: {key!r} is set by {RESERVED[top]}")
    if top == "method":
        base = {"replay": "none"}
    elif top in ("glr", "glr_profile"):
        base = {"method": "naive", "replay": "generative"}
    else:
        base = {"method": "naive", "replay": "latent"}
    data = dict(base)
    set_key(data, key, value)
    try:
        ExperimentConfig.from_dict(data, "config")
    except ConfigError as exc:
        msg = str(exc).removeprefix("config: ")
        msg = msg.removeprefix(f"{key}: ")
        raise SweepError(f"{source}: {where}: {msg}") from None


def parse_sweep(data: dict, source: str = "sweep", *, default_name: str = "sweep") -> Sweep:
    """Validate a sweep file's dict; relative paths are taken from the current folder (as everywhere in the suite)."""
    for key in data:
        if key not in TOP_KEYS:
            hint = " (the dataset root is db_path)" if key == "dataset_root" else ""
            raise SweepError(f"{source}: {key}: unknown key{hint} (known: {', '.join(TOP_KEYS)})")
    name = data.get("name", default_name)
    _string(source, "name", name)
    if not _NAME.match(name):
        raise SweepError(f"{source}: name: {name!r} must be a plain folder name (letters, digits, . _ + -)")
    if "db_path" not in data:
        raise SweepError(f"{source}: db_path: missing (the CORe50 root holding core50_labels.txt and core50_128x128/)")
    db_path = _abs(_string(source, "db_path", data["db_path"]))
    out = _abs(_string(source, "out", data["out"])) if "out" in data else _abs(DEFAULT_OUT) / name
    if '"' in str(out):
        raise SweepError(f"{source}: out: {str(out)!r} must not contain a double quote (the job script quotes it)")
    filelists = _abs(_string(source, "filelists", data["filelists"])) if data.get("filelists") is not None else None
    weights = _abs(_string(source, "weights", data["weights"])) if data.get("weights") is not None else None
    runs = data.get("runs", DEFAULT_RUNS)
    if isinstance(runs, list):
        if not runs or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in runs):
            raise SweepError(f"{source}: runs: expected run numbers >= 0 or a range such as 0-4, got {runs!r}")
        runs = sorted(set(runs))
    elif isinstance(runs, (str, int)) and not isinstance(runs, bool):
        try:
            runs = parse_int_list(str(runs), name="runs")
        except ValueError as exc:
            raise SweepError(f"{source}: {exc}") from None
    else:
        raise SweepError(f"{source}: runs: expected a list or a range such as 0-4, got {runs!r}")
    device = _choice(source, "device", data.get("device", "auto"), launch.DEVICES)
    container = _choice(source, "container", data.get("container", "none"), CONTAINERS)
    nvidia_docker = _choice(source, "nvidia_docker", data.get("nvidia_docker", "new"), tuple(launch.NVIDIA_DOCKER))

    grids = data.get("grid", {})
    grids = [grids] if isinstance(grids, dict) else grids
    if not isinstance(grids, list) or not grids or not all(isinstance(g, dict) for g in grids):
        raise SweepError(f"{source}: grid: expected an object of config keys and lists of values "
                         "(or a list of such objects: the union of their combinations)")
    fixed = data.get("fixed", {})
    if not isinstance(fixed, dict):
        raise SweepError(f"{source}: fixed: expected an object of config keys and values")
    norm_grids: list = []
    for i, grid in enumerate(grids):
        where = "grid" if len(grids) == 1 else f"grid[{i}]"
        norm: dict = {}
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SweepError(f"{source}: {where}.{key}: expected a non-empty list of values, got {values!r}")
            unique, seen = [], set()
            for value in values:
                value = _normalise_value(key, value)
                _check_value(source, f"{where}.{key}", key, value)
                marker = json.dumps(value, sort_keys=True)
                if marker not in seen:
                    seen.add(marker)
                    unique.append(value)
            norm[key] = unique
        norm_grids.append(norm)
    norm_fixed: dict = {}
    for key, value in fixed.items():
        if any(key in g for g in norm_grids):
            raise SweepError(f"{source}: fixed.{key}: also in grid (a key is either fixed or varied)")
        value = _normalise_value(key, value)
        _check_value(source, f"fixed.{key}", key, value)
        norm_fixed[key] = value

    image = data.get("image")
    if container == "docker":
        image = _string(source, "image", image) if image is not None else launch.default_image()
    elif container == "apptainer":
        if image is None:
            raise SweepError(f"{source}: image: required with container apptainer (a .sif file, e.g. built with "
                             f"`apptainer build latent-replay.sif docker-daemon://{launch.default_image()}`)")
        image = _string(source, "image", image)
        if "://" not in image:
            sif = _abs(image)
            if not sif.is_file():
                raise SweepError(f"{source}: image: {image!r} is not a file (an Apptainer image, e.g. "
                                 f"`apptainer build latent-replay.sif docker-daemon://{launch.default_image()}`)")
            image = str(sif)
    else:
        image = ""
    slurm = parse_slurm(data.get("slurm"), source)
    return Sweep(name=name, out=out, db_path=db_path, filelists=filelists, weights=weights, runs=runs, device=device,
                 grid=norm_grids, fixed=norm_fixed, container=container, image=image, nvidia_docker=nvidia_docker,
                 slurm=slurm, source=source)


def load_sweep(path: str | os.PathLike, *, container: Optional[str] = None, out: Optional[str] = None) -> Sweep:
    """Read and validate a sweep file; ``container`` and ``out`` override the file's values."""
    path = Path(path)
    data = read_sweep_file(path)
    if container is not None:
        data["container"] = container
    if out is not None:
        data["out"] = str(out)
    return parse_sweep(data, str(path), default_name=re.sub(r"[^A-Za-z0-9._+-]+", "-", path.stem).strip("-._+") or "sweep")


# -------------------------------------------------------------------------------------- expansion
@dataclass
class Planned:
    """One experiment of the sweep: the launcher's plan and the grid values that made it."""

    plan: launch.Plan
    values: dict

    @property
    def name(self) -> str:
        return self.plan.config.experiment_name


@dataclass
class Expansion:
    sweep: Sweep
    combinations: int = 0
    experiments: list = field(default_factory=list)
    #: (grid values, launcher message) of each invalid combination.
    skipped: list = field(default_factory=list)
    #: Combinations that gave an experiment already in the list once keys that do not apply were dropped.
    merged: int = 0
    dropped: set = field(default_factory=set)
    notes: list = field(default_factory=list)


def _replay_of(values: dict) -> str:
    replay = values.get("replay", ExperimentConfig.replay)
    return REPLAY_ALIASES.get(replay, replay)


def applies(key: str, values: dict) -> bool:
    """Whether a config key means anything for the experiment given by ``values``."""
    top = key.partition(".")[0]
    replay = _replay_of(values)
    if top.startswith("ar1_"):     # AR1*'s importance constants: an ar1_* grid merges for the other methods
        method = values.get("method", ExperimentConfig.method)
        return METHOD_ALIASES.get(method, method) == "ar1"
    if top == "latent_layer":
        return replay in ("latent", "generative")
    if top == "latent_dtype":
        return replay == "latent"
    if top == "replay_memory":
        return replay != "none"
    if top in ("glr", "glr_profile"):
        return replay == "generative"
    return True


def describe_values(values: dict) -> str:
    return ", ".join(f"{k}={_text(v)}" for k, v in values.items()) or "(no grid)"


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def launcher_argv(sweep: Sweep, values: dict) -> list[str]:
    """The ``prepare_experiment.py`` arguments of one combination."""
    v = dict(values)
    method = v.pop("method", ExperimentConfig.method)
    scenario = v.pop("scenario", ExperimentConfig.scenario)
    replay = v.pop("replay", ExperimentConfig.replay)
    argv = [_LAUNCHER_METHOD.get(method, method), str(scenario), _LAUNCHER_REPLAY.get(replay, replay), str(sweep.db_path)]
    for key, option in ARGUMENTS.items():
        if key in v:
            argv += [option, str(v.pop(key))]
    argv += ["--runs", ",".join(map(str, sweep.runs)), "--device", sweep.device, "--out", str(sweep.out),
             "--nvidia_docker", sweep.nvidia_docker, "--force",
             "--launcher", "local" if sweep.container == "none" else "docker"]
    if sweep.container == "docker":
        argv += ["--image", sweep.image]
    if sweep.filelists is not None:
        argv += ["--filelists", str(sweep.filelists)]
    if sweep.weights is not None:
        argv += ["--weights", str(sweep.weights)]
    for key, value in v.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    return argv


def combinations(sweep: Sweep) -> list[tuple[int, dict]]:
    """(grid number, values) of every combination, grid after grid, in the order of the file."""
    out = []
    for i, grid in enumerate(sweep.grid):
        keys = list(grid)
        out += [(i, dict(zip(keys, values))) for values in itertools.product(*(grid[k] for k in keys))]
    return out


def expand(sweep: Sweep) -> Expansion:
    """Every combination of the grid through the launcher's checks: experiments, skipped ones and why."""
    result = Expansion(sweep)
    combos = combinations(sweep)
    result.combinations = len(combos)
    by_name: dict[str, Planned] = {}
    notes: dict[str, None] = {}
    accepted: set[tuple[int, str, str]] = set()
    rejected: dict[tuple[int, str, str], str] = {}
    filelist_checks: dict = {}   # the launcher checks each filelist folder, scenario and run set once
    for grid, combo in combos:
        merged = {**sweep.fixed, **combo}
        dropped = {k for k in merged if not applies(k, merged)}
        values = {k: v for k, v in merged.items() if k not in dropped}
        shown = {k: v for k, v in combo.items() if k not in dropped}
        markers = [(grid, k, json.dumps(v, sort_keys=True)) for k, v in combo.items()]
        try:
            ns = launch.build_parser().parse_args(launcher_argv(sweep, values))
            plan = launch.validate(ns, filelist_checks)
        except launch.UsageError as exc:
            msg = str(exc)
            m = re.match(r"argument (\S+): ", msg)
            if m and m.group(1) in GLOBAL_ARGUMENTS:
                raise SweepError(f"{sweep.source}: {GLOBAL_ARGUMENTS[m.group(1)]}: {msg[m.end():]}") from None
            result.skipped.append((combo, msg))
            for marker in markers:
                rejected.setdefault(marker, msg)
            continue
        accepted.update(markers)
        extra = [(k, v) for k, v in shown.items() if k not in NAMED_KEYS]
        if extra:
            name = "_".join([plan.config.experiment_name, *(f"{_slug(k)}-{_slug(_text(v))}" for k, v in extra)])
            plan.config = plan.config.replace(name=name)
            plan.experiment_dir = plan.out_dir / name
        for line in plan.info:
            notes.setdefault(line)
        result.dropped |= dropped & set(combo)
        name = plan.config.experiment_name
        if name in by_name:
            if _comparable(by_name[name].plan.config.to_dict()) != _comparable(plan.config.to_dict()):
                raise SweepError(f"{sweep.source}: grid: {describe_values(by_name[name].values)} and "
                                 f"{describe_values(shown)} give the same experiment name {name!r} with different "
                                 "configurations")
            result.merged += 1
            continue
        by_name[name] = Planned(plan, shown)
    result.experiments = list(by_name.values())
    result.notes = list(notes)
    if not result.experiments:
        first = f" (first: {describe_values(result.skipped[0][0])}: {result.skipped[0][1]})" if result.skipped else ""
        raise SweepError(f"{sweep.source}: no valid experiment in the grid{first}")
    # A grid value that no combination accepts is a mistake, not a combination to skip.
    for (grid, key, marker), why in rejected.items():
        if (grid, key, marker) not in accepted:
            where = "grid" if len(sweep.grid) == 1 else f"grid[{grid}]"
            raise SweepError(f"{sweep.source}: {where}.{key}: {_text(json.loads(marker))} gives no valid experiment "
                             f"({why})")
    return result


def _comparable(config: dict) -> dict:
    """A config without the keys a task changes (the trainer saves the config with the task's run only)."""
    return {k: v for k, v in config.items() if k != "runs"}


def check_existing(expansion: Expansion, force: bool) -> list[str]:
    """Experiments already in the sweep folder must have been prepared with the same configuration."""
    replaced = []
    for p in expansion.experiments:
        path = p.plan.config_path
        if not path.is_file():
            continue
        try:
            old = ExperimentConfig.load(path).to_dict()
        except ConfigError as exc:
            old, why = None, f"its configuration cannot be read ({exc})"
        else:
            new = p.plan.config.to_dict()
            diff = [k for k in new if k != "runs" and old.get(k) != new[k]]
            why = (f"it was prepared with {diff[0]} = {json.dumps(old.get(diff[0]))}, the sweep now gives "
                   f"{json.dumps(new[diff[0]])}") if diff else None
        if why is None:
            continue
        if not force:
            raise SweepError(f"{p.plan.experiment_dir}: {why}; its results would mix two configurations "
                             "(choose another out folder, or --force to replace the configuration; its finished runs that "
                             "trained otherwise are set aside)")
        replaced.append(f"{p.name}: {why}; configuration replaced")
    return replaced


# ---------------------------------------------------------------------------------------- tasks
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


# -------------------------------------------------------------------------------- the task script
@dataclass
class ScriptSpec:
    """Everything :func:`render_sbatch` needs (no file-system access)."""

    name: str
    sweep_dir: Path
    #: The task indices of tasks.tsv.
    indices: list
    experiments: int
    runs: list
    slurm: SlurmOptions
    container: str = "none"
    gpu: bool = False
    image: str = ""
    mounts: list = field(default_factory=list)
    flavour: str = "new"
    command: list = field(default_factory=list)
    env: dict = field(default_factory=dict)


def script_spec(expansion: Expansion, indices: Sequence[int]) -> ScriptSpec:
    sweep = expansion.sweep
    first = expansion.experiments[0].plan
    command, env = launch.trainer_command() if sweep.container == "none" else ([], {})
    return ScriptSpec(name=sweep.name, sweep_dir=sweep.out, indices=sorted(indices),
                      experiments=len(expansion.experiments), runs=list(sweep.runs), slurm=sweep.slurm, container=sweep.container, gpu=sweep.gpu,
                      image=sweep.image, mounts=list(first.mounts), flavour=launch.NVIDIA_DOCKER[sweep.nvidia_docker],
                      command=command, env=env)


def _continued(parts: Sequence[str], indent: str = "    ") -> list[str]:
    """One command over several lines, ending in ``&`` (started in the background so that signals reach the trap)."""
    lines = []
    for i, part in enumerate(parts):
        end = " &" if i == len(parts) - 1 else " \\"
        lines.append(f"{indent if i else ''}{part}{end}")
    return lines


def render_sbatch(spec: ScriptSpec) -> str:
    """The job-array script: ``#SBATCH`` options, then the task: look up tasks.tsv, record state, run the trainer."""
    q, s = shlex.quote, spec.slurm
    sweep_dir = str(spec.sweep_dir)
    if spec.container == "none":
        how = "trains with the installed latent-replay (no container)"
    elif spec.container == "docker":
        how = f"trains in the docker image {spec.image}" + (" with the task's GPUs" if spec.gpu else ", no GPU")
    else:
        how = f"trains in the Apptainer image {spec.image}" + (" with the task's GPUs (--nv)" if spec.gpu else ", no GPU")
    lines = [
        "#!/usr/bin/env bash",
        f"# Sweep {spec.name}: {spec.experiments} experiment(s) x run(s) {format_int_list(spec.runs)} = "
        f"{len(spec.indices)} task(s), one run of one experiment each (tasks.tsv).",
        f"# Written by `latent-replay sweep` (latent-replay {__version__}); {how}.",
        "# `latent-replay sweep` and `latent-replay sweep resubmit DIR` submit it with --array=<the unfinished tasks>,",
        "# which replaces the --array line below; `bash sweep.sbatch TASK` runs one task on this machine.",
    ]
    directives = [f"--job-name={s.job_name or 'lr-' + spec.name}"]
    if not spec.indices or max(spec.indices) < s.max_array_size:
        directives.append(f"--array={array_spec(spec.indices, s.throttle)}")
    else:
        lines.append(f"# More tasks than MaxArraySize ({s.max_array_size}): submitted as several arrays, each with "
                     "LATENT_REPLAY_TASK_OFFSET.")
    # sbatch expands %-patterns in the path: a literal % of the folder is written %%
    directives.append(f"--output={str(sweep_dir).replace('%', '%%')}/{LOG_DIR}/%A_%a.out")
    if s.time:
        directives.append(f"--time={s.time}")
    directives += ["--ntasks=1", f"--cpus-per-task={s.cpus_per_task}"]
    if s.mem:
        directives.append(f"--mem={s.mem}")
    if s.gpus and spec.gpu:      # device cpu: no GPU to wait for
        directives.append(f"--gres=gpu:{s.gpu_type + ':' if s.gpu_type else ''}{s.gpus}")
    for key in ("partition", "account", "qos"):
        if getattr(s, key):
            directives.append(f"--{key}={getattr(s, key)}")
    directives += list(s.extra)
    lines += [f"#SBATCH {_directive(d)}" for d in directives]
    lines += [
        "",
        "set -euo pipefail",
        f"sweep_dir={q(sweep_dir)}",
        'if [ "$#" -gt 0 ]; then',
        "    task=$1",
        'elif [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then',
        "    task=$((${LATENT_REPLAY_TASK_OFFSET:-0} + SLURM_ARRAY_TASK_ID))",
        "else",
        "    echo 'sweep.sbatch: not started as a Slurm array task; run one task with: bash sweep.sbatch TASK' >&2",
        "    exit 2",
        "fi",
        "line=$(awk -F '\\t' -v t=\"$task\" 'NR > 1 && $1 == t { print $2 \"\\t\" $3; exit }' \"$sweep_dir/tasks.tsv\")",
        'if [ -z "$line" ]; then',
        "    printf 'sweep.sbatch: task %s is not in %s\\n' \"$task\" \"$sweep_dir/tasks.tsv\" >&2",
        "    exit 2",
        "fi",
        "IFS=$'\\t' read -r experiment run <<<\"$line\"",
        'if [ "$#" -eq 0 ]; then',
        '    job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
        '    log="$sweep_dir/logs/$job.out"',
        "else",
        '    job="${LATENT_REPLAY_JOB:-manual-$$}"',
        '    log="${LATENT_REPLAY_TASK_LOG:-}"',
        "fi",
        "",
        "# state/task<I>: started, then ended with the exit code (latent-replay sweep status reads it)",
        'state="$sweep_dir/state/task$task"',
        "host=$(hostname)",
        "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)",
        "record() {",
        "    printf '%s\\n' \"task=$task\" \"experiment=$experiment\" \"run=$run\" \"job=$job\" \"host=$host\" \"pid=$$\" \\",
        '        "log=$log" "started=$started" "$@" >"$state.$$.tmp"',
        '    mv -f "$state.$$.tmp" "$state"',
        "}",
        "finish() {",
        '    record "ended=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "exit=$1"',
        "    finished=1",
        "}",
        'finished=""',
        'child=""',
        "# shellcheck disable=SC2317  # stop_child and on_signal are called from the traps",
        "stop_child() {",
        '    if [ -n "$child" ]; then',
    ]
    if spec.container == "docker":
        lines.append('        "$docker" stop --time 10 "$container" >/dev/null 2>&1 || true')
    lines += [
        '        kill -TERM "$child" 2>/dev/null || true',
        '        wait "$child" 2>/dev/null || true',
        "    fi",
        "}",
        "# shellcheck disable=SC2317",
        "on_signal() {   # scancel, the time limit, preemption, Ctrl-C: the run resumes from its checkpoint",
        "    trap - TERM INT",
        "    stop_child",
        '    finish "$1"',
        "    printf 'task %s: stopped by a signal (exit %s)\\n' \"$task\" \"$1\" >&2",
        '    exit "$1"',
        "}",
        "trap 'on_signal 143' TERM",
        "trap 'on_signal 130' INT",
        "# any other way out (a failing slurm.setup line under set -e) is recorded too",
        "trap 'status=$?; if [ -z \"$finished\" ]; then finish \"$status\"; fi' EXIT",
        'mkdir -p "$sweep_dir/state"',
        "record",
        "printf 'task %s: %s run %s (job %s on %s, %s)\\n' \"$task\" \"$experiment\" \"$run\" \"$job\" \"$host\" \"$started\"",
        "",
    ]
    if s.setup:
        lines += ["# slurm.setup of the sweep file", *s.setup, ""]
    lines.append(f'export GLIBC_TUNABLES="${{GLIBC_TUNABLES:-{launch.GLIBC_TUNABLES}}}"')
    if spec.container == "none":
        for key, value in spec.env.items():
            lines.append(f'export {key}={q(value)}"${{{key}:+:${key}}}"')
        config = '"$sweep_dir/$experiment/exp_configuration.json"'
        lines += _continued([" ".join(q(c) for c in spec.command),
                             f'train --config {config} --runs "$run" --no-progress'])
    else:
        config = f'"{launch.CONTAINER_RESULTS}/$experiment/{launch.CONFIG_FILE}"'
        train = f'train --config {config} --runs "$run" --no-progress'
        binds = list(spec.mounts)
        if spec.container == "docker":
            lines += ['docker="${DOCKER:-docker}"', f"image={q(spec.image)}",
                      'container="latent-replay-${job}-task${task}"']
            gpu = []
            if spec.gpu:
                lines += ["# the GPU --launcher local gave this task, else Slurm's GPUs (global indices), else those "
                          "of CUDA_VISIBLE_DEVICES, else all",
                          'gpus="${LATENT_REPLAY_TASK_GPUS:-${SLURM_JOB_GPUS:-${CUDA_VISIBLE_DEVICES:-}}}"']
                if spec.flavour == "new":
                    lines += ["gpu=(--gpus all)",
                              'if [ -n "$gpus" ]; then gpu=(--gpus "\\"device=$gpus\\""); fi']
                else:
                    lines += ['gpu=(--runtime=nvidia -e "NVIDIA_VISIBLE_DEVICES=${gpus:-all}")']
                gpu = ['"${gpu[@]}"']
            parts = ['"$docker" run --rm --init --pull never --name "$container"', *gpu, "--network none",
                     '--user "$(id -u):$(id -g)"', '-e "GLIBC_TUNABLES=$GLIBC_TUNABLES"',
                     *(f"-v {q(m.spec)}" for m in binds), '"$image"', train]
        else:
            lines += ['apptainer="${APPTAINER:-apptainer}"']
            parts = ['"$apptainer" exec' + (" --nv" if spec.gpu else ""),
                     *(f"--bind {q(m.spec)}" for m in binds), f"--pwd {launch.CONTAINER_RESULTS}",
                     q(spec.image), f"latent-replay {train}"]
        lines += _continued(parts)
    lines += [
        "child=$!",
        "status=0",
        'wait "$child" || status=$?',
        'child=""',
        'finish "$status"',
        'if [ "$status" -ne 0 ]; then',
        "    printf 'task %s: the trainer exited with %s; see latent-replay sweep status %q\\n' \"$task\" \"$status\" "
        '"$sweep_dir" >&2',
        "fi",
        'exit "$status"',
        "",
    ]
    return "\n".join(lines)


def _directive(option: str) -> str:
    """An ``#SBATCH`` option; a value with spaces is double-quoted (sbatch reads quoted directive values)."""
    if any(c.isspace() for c in option) and "=" in option:
        key, _, value = option.partition("=")
        return f'{key}="{value}"'
    return option


# --------------------------------------------------------------------------------------- state
def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_state(sweep_dir: Path, index: int) -> Optional[dict]:
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


_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
_RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"}


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


_EXIT_WORDS = {
    1: "error (see the log)", 2: "rejected input (see the log)", 130: "interrupted",
    137: "killed (SIGKILL: out of memory or the time limit's hard kill)",
    143: "terminated (scancel, time limit or preemption)",
}


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


def _batches_done(run_dir: Path) -> int:
    """Evaluations after a batch in metrics.csv (the trainer rewrites it after every batch)."""
    try:
        lines = (run_dir / "metrics.csv").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return 0
    if not lines or "kind" not in lines[0].split(","):
        return max(0, len(lines) - 1)
    col = lines[0].split(",").index("kind")
    return sum(1 for ln in lines[1:] if len(ln.split(",")) > col and ln.split(",")[col] == "batch")


def task_status(sweep_dir: Path, task: Task, state: Optional[dict], queued: Optional[dict],
                config: Optional[ExperimentConfig] = None) -> TaskStatus:
    """Where a task stands. With the experiment's ``config``, a run that finished with another one is not
    finished: missing unless Slurm lists the task (submitting it sets the old run aside: :func:`write_sweep`,
    :func:`set_aside_selected`)."""
    run_dir = Path(sweep_dir) / task.experiment / f"run{task.run}"
    st = TaskStatus(task.index, task.experiment, task.run, "missing", batches=_batches_done(run_dir))
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
        st.state = "pending" if q[1] in _PENDING else "running"
        st.detail = q[1].lower()
        if state is None or state.get("job") != q[0] or ended:   # the state file is of an earlier attempt
            st.log, st.exit = "", None
        st.job = q[0]
        return st
    if stale:   # its state file, if any, is of the attempt that finished
        st.batches, st.exit, st.log = 0, None, ""
        st.detail = (f"finished with another configuration than its experiment's (changed: {', '.join(stale)}); "
                     "submitting it sets that run aside and trains it again")
        return st
    if state is None:
        return st
    if "ended" in state:
        st.state = "failed"
        if st.exit == 0:
            st.detail = "ended with exit 0 but wrote no summary.json"
        else:
            st.detail = f"exit {st.exit}: {_EXIT_WORDS.get(st.exit, 'error (see the log)')}" if st.exit is not None \
                else "ended without an exit code"
        return st
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


def _saved_configs(sweep_dir: Path, tasks: Sequence[Task]) -> dict[str, Optional[ExperimentConfig]]:
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
    return task_statuses(sweep_dir, tasks, _saved_configs(sweep_dir, tasks))


def set_aside_selected(sweep_dir: Path, tasks: Sequence[Task], selected: Sequence[int],
                       configs: dict[str, Optional[ExperimentConfig]], echo: Callable[[str], None]) -> None:
    """Before the ``selected`` tasks are submitted: set aside the finished runs among them that trained
    otherwise than their experiment's config (the trainer would refuse them), saying so."""
    chosen = set(selected)
    for t in tasks:
        cfg = configs.get(t.experiment)
        if t.index in chosen and cfg is not None:
            for line in set_aside_lines(set_aside_stale(Path(sweep_dir) / t.experiment, cfg, [t.run]), _display):
                echo(f"  {line}")


def count_states(statuses: Sequence[TaskStatus]) -> dict[str, int]:
    return {s: sum(1 for t in statuses if t.state == s) for s in STATES}


def _display(path: str | os.PathLike) -> str:
    return launch._display(Path(path))


def format_status(sweep_dir: Path, statuses: Sequence[TaskStatus]) -> str:
    counts = count_states(statuses)
    head = f"sweep {_display(sweep_dir)}: {len(statuses)} task(s): " + ", ".join(f"{counts[s]} {s}" for s in STATES)
    rows = [("experiment", "run", "task", "state", "job", "batches", "detail")]
    for t in statuses:
        detail = t.detail
        if t.state == "failed" and t.log:
            detail += f"; log {_display(t.log)}"
        rows.append((t.experiment, str(t.run), str(t.task), t.state, t.job or "-", str(t.batches), detail))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = [head]
    for r in rows:
        cells = [r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].rjust(widths[2]), r[3].ljust(widths[3]),
                 r[4].ljust(widths[4]), r[5].rjust(widths[5]), r[6]]
        lines.append("  ".join(cells).rstrip())
    unfinished = counts["failed"] + counts["missing"]
    if unfinished:
        lines.append(f"{unfinished} task(s) to run again: latent-replay sweep resubmit {shlex.quote(_display(sweep_dir))}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- launchers
def stored_sweep(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / SWEEP_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"{sweep_dir}: not a sweep folder (no {SWEEP_JSON}; `latent-replay sweep SWEEP_FILE` "
                         "writes it)") from None
    except (OSError, ValueError) as exc:
        raise SweepError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SWEEP_FORMAT:
        raise SweepError(f"{path}: not a sweep description of latent-replay")
    return data


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
        raise SweepError("sbatch not found: submit from a Slurm login node, or use --launcher local (or --dry-run "
                         "to see the script)")
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
        add_submission(sweep_dir, Submission(job, "slurm", offset, array, _now()))
        jobs.append(job)
        echo(f"submitted job {job}: array {array} ({size} task(s)); logs in {_display(Path(sweep_dir) / LOG_DIR)}")
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


def run_local(sweep_dir: Path, tasks: Sequence[Task], gpus: Sequence[Optional[str]],
              echo: Callable[[str], None] = click.echo) -> list[tuple[Task, int]]:
    """Run tasks on this machine through the same script, one per GPU at a time (or one after the other)."""
    sweep_dir = Path(sweep_dir)
    job = f"local-{os.getpid()}"
    add_submission(sweep_dir, Submission(job, "local", 0, array_spec(t.index for t in tasks), _now()))
    pending = list(tasks)
    results: list[tuple[Task, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    where = "GPU " + ", ".join(g for g in gpus if g is not None) if gpus != [None] else "CPU, one task at a time"
    echo(f"running {len(tasks)} task(s) here ({where}); logs in {_display(sweep_dir / LOG_DIR)}")

    def worker(gpu: Optional[str]) -> None:
        while not stop.is_set():
            with lock:
                if not pending:
                    return
                task = pending.pop(0)
            log = sweep_dir / LOG_DIR / f"{job}_{task.index}.out"
            env = {**os.environ, "LATENT_REPLAY_JOB": job, "LATENT_REPLAY_TASK_LOG": str(log)}
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = env["LATENT_REPLAY_TASK_GPUS"] = gpu
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w", encoding="utf-8") as fh:
                code = subprocess.run(["bash", str(sweep_dir / SCRIPT), str(task.index)], stdout=fh,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env).returncode
            with lock:
                results.append((task, code))
                word = "finished" if code == 0 else f"failed (exit {code}; log {_display(log)})"
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


# ----------------------------------------------------------------------------------------- run
def _select(statuses: Sequence[TaskStatus]) -> list[int]:
    return [s.task for s in statuses if s.state in ("failed", "missing")]


def _print_report(expansion: Expansion, tasks: Sequence[Task], statuses: Sequence[TaskStatus],
                  echo: Callable[[str], None]) -> None:
    sweep = expansion.sweep
    echo(f"sweep {sweep.name}: {expansion.combinations or 1} combination(s) -> {len(expansion.experiments)} "
         f"experiment(s) x run(s) {format_int_list(sweep.runs)} = {len(tasks)} task(s) in {_display(sweep.out)}")
    if expansion.merged:
        echo(f"  {expansion.merged} combination(s) gave an experiment listed already: "
             f"{', '.join(sorted(expansion.dropped))} left out where it does not apply (latent_layer and latent_dtype "
             "apply to latent/generative replay, replay_memory to any replay, glr keys to generative replay, ar1_* to ar1)")
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
    spec = script_spec(expansion, [t.index for t in tasks])
    script = render_sbatch(spec)
    python, has_torch = launch.trainer_python()
    if sweep.container == "none" and not has_torch:
        echo(f"  warning: the tasks will train with {python}, which has no PyTorch here (make test creates the "
             "checkout's .venv with everything)")
    if dry_run:
        echo(f"--- {sweep.out / SCRIPT} (dry run: nothing written, nothing submitted) ---")
        echo(script.rstrip("\n"))
        echo("---")
        _echo_plan(sweep.out, selected, tasks, launcher, sweep, echo)
        return 0
    if selected and launcher == "slurm" and shutil.which("sbatch") is None:
        raise SweepError("sbatch not found: submit from a Slurm login node, or use --launcher local (or --dry-run "
                         "to see the script)")
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
        for line in set_aside_lines(set_aside, _display):
            echo(f"  {line}")
    (sweep.out / LOG_DIR).mkdir(parents=True, exist_ok=True)
    (sweep.out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    data = sweep.to_dict()
    data.update(launcher=launcher, written=_now(), suite=__version__, experiments=[p.name for p in expansion.experiments],
                skipped=[{"values": c, "reason": why} for c, why in expansion.skipped])
    atomic_write_text(sweep.out / SWEEP_JSON, json.dumps(data, indent=2) + "\n")
    atomic_write_text(sweep.out / TASKS_FILE, tasks_text(tasks))
    atomic_write_text(sweep.out / SCRIPT, script)
    os.chmod(sweep.out / SCRIPT, 0o755)


def _echo_plan(sweep_dir: Path, selected: Sequence[int], tasks: Sequence[Task], launcher: str, sweep: Sweep,
               echo: Callable[[str], None]) -> None:
    if not selected:
        echo("nothing to submit: every task is finished, running or pending")
    elif launcher == "slurm":
        for _, cmd in sbatch_commands(sweep_dir, selected, sweep.slurm):
            echo("would run: " + " ".join(shlex.quote(c) for c in cmd))
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
        echo(f"follow it with: latent-replay sweep status {shlex.quote(_display(sweep_dir))}")
        return 0
    chosen = [t for t in tasks if t.index in set(selected)]
    results = run_local(sweep_dir, chosen, local_gpus(device), echo)
    failed = [t for t, code in results if code != 0]
    if failed:
        raise SweepError(f"{len(failed)} of {len(results)} task(s) failed (latent-replay sweep status "
                         f"{shlex.quote(_display(sweep_dir))}; run them again with latent-replay sweep resubmit "
                         f"{shlex.quote(_display(sweep_dir))} --launcher local)")
    echo(f"all {len(results)} task(s) finished; figures: latent-replay figures {shlex.quote(_display(sweep_dir))}")
    return 0


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
    configs = _saved_configs(sweep_dir, tasks)
    statuses = task_statuses(sweep_dir, tasks, configs)
    selected = _select(statuses)
    counts = count_states(statuses)
    echo(f"sweep {_display(sweep_dir)}: " + ", ".join(f"{counts[s]} {s}" for s in STATES) +
         f"; {len(selected)} to {'submit' if launcher == 'slurm' else 'run'}")
    if dry_run:
        if selected and launcher == "slurm":
            for _, cmd in sbatch_commands(sweep_dir, selected, slurm):
                echo("would run: " + " ".join(shlex.quote(c) for c in cmd))
        elif selected:
            echo(f"would run {len(selected)} task(s) here: {array_spec(selected)}")
        return 0
    set_aside_selected(sweep_dir, tasks, selected, configs, echo)
    return _launch(sweep_dir, selected, tasks, launcher, slurm, device, echo)


# ------------------------------------------------------------------------------------------ CLI
class SweepGroup(click.Group):
    """``latent-replay sweep SWEEP_FILE ...`` is ``latent-replay sweep run SWEEP_FILE ...``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("sweep", cls=SweepGroup, subcommand_metavar="SWEEP_FILE [OPTIONS] | status DIR | resubmit DIR",
             context_settings={"help_option_names": ["-h", "--help"]})
def sweep_command():
    """Run a grid of experiments as a Slurm job array (or on this machine).

    latent-replay sweep SWEEP_FILE [--launcher slurm|local] [--dry-run] expands the sweep file into experiment
    folders and submits one array task per experiment and run (the same as `sweep run`); `sweep status DIR`
    shows finished / running / pending / failed / missing tasks; `sweep resubmit DIR` submits the failed
    and missing ones again. See docs/sweep.md.
    """


@sweep_command.command("run")
@click.argument("sweep_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--launcher", type=click.Choice(LAUNCHERS), default="slurm", show_default=True,
              help="slurm: submit a job array with sbatch; local: run the tasks here (one per GPU, or one after the "
                   "other on CPU).")
@click.option("--container", type=click.Choice(CONTAINERS), default=None,
              help="Where each task runs the trainer (default: the sweep file's 'container', else none).")
@click.option("--out", default=None, help="Sweep folder (default: the sweep file's 'out', else results/<name>).")
@click.option("--dry-run", is_flag=True, help="Check and print the expansion, the script and the sbatch command; "
                                              "write and submit nothing.")
@click.option("--force", is_flag=True, help="Replace the configuration of experiments prepared before with "
                                            "different settings (their finished runs trained otherwise are set aside as "
                                            "run<R>.former and trained again).")
def sweep_run(sweep_file, launcher, container, out, dry_run, force):
    """Expand SWEEP_FILE (JSON, or YAML with PyYAML) and submit its unfinished tasks."""
    run_sweep(sweep_file, launcher=launcher, container=container, out=out, dry_run=dry_run, force=force)


@sweep_command.command("status")
@click.argument("sweep_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per task instead of the table.")
def sweep_status(sweep_dir, as_json):
    """Finished / running / pending / failed / missing, per experiment and run of the sweep folder SWEEP_DIR."""
    statuses = collect_status(sweep_dir)
    if as_json:
        click.echo(json.dumps([asdict(s) for s in statuses], indent=1))
    else:
        click.echo(format_status(sweep_dir, statuses))


@sweep_command.command("resubmit")
@click.argument("sweep_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--launcher", type=click.Choice(LAUNCHERS), default=None,
              help="Default: the launcher the sweep was last started with.")
@click.option("--dry-run", is_flag=True, help="Print what would be submitted.")
def sweep_resubmit(sweep_dir, launcher, dry_run):
    """Submit the failed and missing tasks of SWEEP_DIR again (finished, running and pending ones are left alone)."""
    resubmit(sweep_dir, launcher=launcher, dry_run=dry_run)
