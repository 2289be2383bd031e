"""The sweep file: its keys, their validation (one-line errors naming the file and key), :class:`Sweep`."""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from .. import launch
from ..config import ConfigError, ExperimentConfig, flat_key, set_key
from ..config.sections import SCHEMA1_METHOD_KEYS
from ..registry import METHODS
from ..utils import has_control_characters, parse_int_list

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
_WORD = re.compile(r"^[^\s'\"\\$`;&|<>(){}]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}"
                   r"|UNLIMITED|unlimited|INFINITE|infinite)$")
_MEM = re.compile(r"^\d+[KMGT]?$")


class SweepError(ValueError):
    """A rejected sweep file or folder: one line naming the file and key (``latent-replay`` prints ``Error: ...``)."""


def display(path: str | os.PathLike) -> str:
    """A path as the sweep's messages show it (relative to the current folder when inside it)."""
    return launch._display(Path(path))


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
    data = _parse_yaml(path, text) if path.suffix.lower() in (".yaml", ".yml") else _parse_json(path, text)
    if not isinstance(data, dict):
        raise SweepError(f"{path}: expected an object of sweep keys ({', '.join(TOP_KEYS)}), got {type(data).__name__}")
    return data


def _parse_json(path: Path, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SweepError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def _parse_yaml(path: Path, text: str):
    try:
        import yaml
    except ImportError:
        raise SweepError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); "
                         "or write the sweep file as JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SweepError(f"{where}: not valid YAML ({what})") from None


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
    key_flat = flat_key(key)
    top = key_flat.partition(".")[0]
    if top in RESERVED:
        raise SweepError(f"{source}: {where}: {key!r} is set by {RESERVED[top]}")
    if top == "method":
        base = {"replay": "none"}
    elif top in ("glr", "glr_profile"):
        base = {"method": "naive", "replay": "generative"}
    elif top in ("method_params", *SCHEMA1_METHOD_KEYS):   # with a method that declares it
        sub = key_flat.partition(".")[2].partition(".")[0]
        declares = [e.name for e in METHODS if e.params is not None and sub in e.params.__dataclass_fields__]
        base = {"method": SCHEMA1_METHOD_KEYS[top][0] if top in SCHEMA1_METHOD_KEYS else
                (declares or ["naive"])[0], "replay": "none"}
    else:
        base = {"method": "naive", "replay": "latent"}
    data = dict(base)
    set_key(data, key_flat, value)
    try:
        ExperimentConfig.from_dict(data, "config")
    except ConfigError as exc:
        msg = str(exc).removeprefix("config: ")
        msg = msg.removeprefix(f"{key_flat}: ")
        raise SweepError(f"{source}: {where}: {msg}") from None


def _parse_runs(source: str, runs) -> list[int]:
    if isinstance(runs, list):
        if not runs or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in runs):
            raise SweepError(f"{source}: runs: expected run numbers >= 0 or a range such as 0-4, got {runs!r}")
        return sorted(set(runs))
    if isinstance(runs, (str, int)) and not isinstance(runs, bool):
        try:
            return parse_int_list(str(runs), name="runs")
        except ValueError as exc:
            raise SweepError(f"{source}: {exc}") from None
    raise SweepError(f"{source}: runs: expected a list or a range such as 0-4, got {runs!r}")


def _parse_grid(source: str, where: str, grid: dict) -> dict:
    """One grid: every key's values checked (:func:`_check_value`), duplicates dropped."""
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
        norm[flat_key(key)] = unique    # schema-2 names (schedule.epochs) as the flat keys they stand for
    return norm


def _parse_grids_and_fixed(source: str, data: dict) -> tuple[list, dict]:
    grids = data.get("grid", {})
    grids = [grids] if isinstance(grids, dict) else grids
    if not isinstance(grids, list) or not grids or not all(isinstance(g, dict) for g in grids):
        raise SweepError(f"{source}: grid: expected an object of config keys and lists of values "
                         "(or a list of such objects: the union of their combinations)")
    fixed = data.get("fixed", {})
    if not isinstance(fixed, dict):
        raise SweepError(f"{source}: fixed: expected an object of config keys and values")
    norm_grids = [_parse_grid(source, "grid" if len(grids) == 1 else f"grid[{i}]", grid)
                  for i, grid in enumerate(grids)]
    norm_fixed: dict = {}
    for key, value in fixed.items():
        if any(flat_key(key) in g for g in norm_grids):
            raise SweepError(f"{source}: fixed.{key}: also in grid (a key is either fixed or varied)")
        value = _normalise_value(key, value)
        _check_value(source, f"fixed.{key}", key, value)
        norm_fixed[flat_key(key)] = value
    return norm_grids, norm_fixed


def _parse_image(source: str, container: str, image) -> str:
    if container == "docker":
        return _string(source, "image", image) if image is not None else launch.default_image()
    if container != "apptainer":
        return ""
    build = f"`apptainer build latent-replay.sif docker-daemon://{launch.default_image()}`"
    if image is None:
        raise SweepError(f"{source}: image: required with container apptainer (a .sif file, e.g. built with {build})")
    image = _string(source, "image", image)
    if "://" in image:
        return image
    sif = _abs(image)
    if not sif.is_file():
        raise SweepError(f"{source}: image: {image!r} is not a file (an Apptainer image, e.g. {build})")
    return str(sif)


def _optional_path(source: str, data: dict, key: str) -> Optional[Path]:
    return _abs(_string(source, key, data[key])) if data.get(key) is not None else None


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
    filelists, weights = _optional_path(source, data, "filelists"), _optional_path(source, data, "weights")
    runs = _parse_runs(source, data.get("runs", DEFAULT_RUNS))
    device = _choice(source, "device", data.get("device", "auto"), launch.DEVICES)
    container = _choice(source, "container", data.get("container", "none"), CONTAINERS)
    nvidia_docker = _choice(source, "nvidia_docker", data.get("nvidia_docker", "new"), tuple(launch.NVIDIA_DOCKER))
    grids, fixed = _parse_grids_and_fixed(source, data)
    image = _parse_image(source, container, data.get("image"))
    slurm = parse_slurm(data.get("slurm"), source)
    return Sweep(name=name, out=out, db_path=db_path, filelists=filelists, weights=weights, runs=runs, device=device,
                 grid=grids, fixed=fixed, container=container, image=image, nvidia_docker=nvidia_docker,
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


def stored_sweep(sweep_dir: Path) -> dict:
    """The ``sweep.json`` of a sweep folder (the sweep as expanded, with its launcher)."""
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
