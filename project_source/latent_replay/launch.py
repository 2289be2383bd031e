"""``prepare_experiment.py``: the original launcher's command line, writing the trainer's config and a run script.

    prepare_experiment.py METHOD SCENARIO REPLAY DB_PATH [--latent_layer L] [--replay_memory N]
                          [--nvidia_docker old|new|nvidia-docker2|nvidia-container-toolkit] [options]
    prepare_experiment.py list_layers

The positional arguments and the three original options take exactly the original's values and are
checked in the original's order (spec §2.1, items 1-14), with its message bugs fixed (§11 B17): every
rejection is one line ``PROG: error: argument NAME: ...`` naming the accepted values, exit code 2, and
nothing is written. New: METHOD ``NAIVE``/``JOINT``, REPLAY ``generative``, ``--runs``, ``--launcher``,
``--device``, ``--profile``, ``--out``, ``--filelists``, ``--weights``, ``--image``, ``--max_batches``,
``--set KEY=VALUE`` and ``--force``, checked after the original ones in that order.

On success the experiment folder ``<out>/<experiment_name>/`` (where the trainer also writes
``run<R>/``) receives ``exp_configuration.json`` (the trainer's :class:`ExperimentConfig`, with the
paths the trainer will see: host paths for ``local``, container paths for ``docker``) and an executable
``run_experiment.sh``; both are written atomically, and an existing experiment is replaced only with
``--force``. A failing write exits with 1.

The same command is ``latent-replay prepare`` (:data:`prepare_command`); ``run_experiments/prepare_experiment.py``
is a shim calling :func:`main`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Optional, Sequence

import click

from . import __version__
from .config import LATENT_LAYERS, PROFILES, ConfigError, ExperimentConfig, flat_key, set_key
from .config.sections import SCHEMA1_METHOD_KEYS
from .data.classes import IMAGES_DIR, LABELS_FILE, NUM_CLASSES
from .registry import METHODS as REGISTRY_METHODS
from .registry import REPLAYS as REGISTRY_REPLAYS
from .results import CONFIG_FILE, set_aside_lines, set_aside_stale
from .utils import format_int_list, parse_int_list

PROG = "prepare_experiment.py"
RUN_SCRIPT = "run_experiment.sh"

SCENARIOS = ("79", "196", "391")
#: Accepted ``--nvidia_docker`` spellings and the flavour they stand for (original item 7).
NVIDIA_DOCKER = {"old": "old", "nvidia-docker2": "old", "new": "new", "nvidia-container-toolkit": "new"}
#: How the run script passes the GPU to ``docker run`` (spec §2.2 item 3).
GPU_OPTIONS = {"old": ("--runtime=nvidia",), "new": ("--gpus", "all")}
#: The first-check script of each flavour (``docker/first_check_*.sh``).
FIRST_CHECK = {"old": "first_check_nvidia-docker2.sh", "new": "first_check_nvidia-container-toolkit.sh"}
LAUNCHERS = ("docker", "local")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_LAYER = "conv5_4/dw"
DEFAULT_MEMORY = 1500
DEFAULT_RUNS = "0-4"
DEFAULT_OUT = "results"
#: Keep freed memory instead of returning it to the kernel: roughly doubles PyTorch CPU throughput.
GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736"
#: Where the image expects things (the Dockerfile creates these folders).
CONTAINER_DATASETS = "/datasets"
CONTAINER_FILELISTS = "/filelists"
CONTAINER_WEIGHTS = "/weights"
CONTAINER_RESULTS = "/results"
#: Config keys set by a dedicated argument (``--set`` refuses them and names the argument).
MANAGED_KEYS = {
    "method": "METHOD", "scenario": "SCENARIO", "replay": "REPLAY", "dataset_root": "DB_PATH",
    "latent_layer": "--latent_layer", "replay_memory": "--replay_memory", "runs": "--runs",
    "device": "--device", "profile": "--profile", "out": "--out", "filelists": "--filelists",
    "weights": "--weights", "max_batches": "--max_batches",
}


def default_image() -> str:
    return f"latent-replay:{__version__}"


def repo_root() -> Optional[Path]:
    """The source checkout holding this package (``None`` for an installed copy)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "run_experiments").is_dir() and (root / "docker").is_dir() else None


class UsageError(Exception):
    """A rejected argument: one line, exit code 2, nothing written."""

    def __init__(self, argument: Optional[str], message: str):
        super().__init__(f"argument {argument}: {message}" if argument else message)
        #: The argument as the command line names it (``DB_PATH``, ``--out``; None: no single one), and the
        #: message without it.
        self.argument, self.message = argument, message


def _choices(values) -> str:
    return ", ".join(values)


def _invalid_choice(argument: str, value: str, choices) -> UsageError:
    return UsageError(argument, f"invalid choice {value!r} (choose from {_choices(choices)})")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (raised, so that the caller decides what to print)."""

    def error(self, message):
        raise UsageError(None, f"{message} (see -h)")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prepare a latent-replay experiment: write <out>/<experiment>/exp_configuration.json\n"
                    "and run_experiment.sh (trains in the Docker image, or locally with --launcher local).\n"
                    f"'{prog} list_layers' prints the 15 latent layers.",
        epilog="Examples:\n"
               f"  {prog} AR1F 391 latent /data/core50 --latent_layer conv5_4/dw --nvidia_docker new\n"
               f"  {prog} CWR 79 no /data/core50 --launcher local --runs 0-9 --device cpu\n"
               "Every value is checked before anything is written (see docs/launcher.md).")
    # Values are validated by validate() in the original's order, not by argparse (which would check
    # options as they appear on the command line).
    p.add_argument("method", metavar="METHOD",
                   help=f"continual-learning method: {_choices(_launcher_names(REGISTRY_METHODS))}")
    p.add_argument("scenario", metavar="SCENARIO", help=f"NICv2 scenario: {_choices(SCENARIOS)}")
    p.add_argument("replay", metavar="REPLAY",
                   help=f"replay: {_choices(_launcher_names(REGISTRY_REPLAYS))} (no = none, pure = native images)")
    p.add_argument("db_path", metavar="DB_PATH", help=f"dataset root holding {LABELS_FILE} and {IMAGES_DIR}/")
    o = p.add_argument_group("options of the original launcher")
    o.add_argument("--latent_layer", "--latent-layer", metavar="L", default=None,
                   help=f"latent replay layer (default {DEFAULT_LAYER}; pool6 for CWR); see list_layers")
    o.add_argument("--replay_memory", "--replay-memory", metavar="N", default=None,
                   help=f"replay memory size in patterns, > 0 (default {DEFAULT_MEMORY})")
    o.add_argument("--nvidia_docker", "--nvidia-docker", metavar="FLAVOUR", default="old",
                   help=f"how docker gets the GPU: {_choices(NVIDIA_DOCKER)} (default old: --runtime=nvidia; "
                        "new: --gpus all)")
    n = p.add_argument_group("new options")
    n.add_argument("--runs", default=DEFAULT_RUNS, help=f"runs, a list or range such as 0-4, 0,2,4 (default {DEFAULT_RUNS})")
    n.add_argument("--launcher", default="docker", help="docker (run in the image) or local (default docker)")
    n.add_argument("--device", default="auto", help=f"{_choices(DEVICES)} (default auto)")
    n.add_argument("--profile", default="fixed", help=f"fidelity profile: {_choices(PROFILES)} (default fixed)")
    n.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"results folder; the experiment goes to DIR/<experiment>/ (default {DEFAULT_OUT})")
    n.add_argument("--filelists", default=None, metavar="DIR",
                   help="NICv2 filelists (official or generated; default DB_PATH/batch_filelists if present, "
                        "else the official lists shipped in the repository's batch_filelists/, runs 0-4)")
    n.add_argument("--weights", default=None, metavar="FILE", help="ImageNet weights (default: random init)")
    n.add_argument("--image", default=None, metavar="NAME:TAG", help=f"docker image (default {default_image()})")
    n.add_argument("--max_batches", "--max-batches", default=None, metavar="N",
                   help="stop each run after N batches (smoke tests)")
    n.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config key (JSON value), e.g. --set epochs=1 --set fidelity.padded_test_set=true")
    n.add_argument("--force", action="store_true", help="replace an experiment prepared before in the same folder")
    return p


# ------------------------------------------------------------------------------------------ plan
@dataclass
class Mount:
    host: Path
    target: str
    read_only: bool = True

    @property
    def spec(self) -> str:
        return f"{self.host}:{self.target}{':ro' if self.read_only else ''}"


@dataclass
class Plan:
    """Everything validated: the config to write and how the run script starts the trainer."""

    config: ExperimentConfig
    launcher: str
    experiment_dir: Path
    out_dir: Path
    flavour: Optional[str] = None              # "old"/"new"; None = no GPU option (device cpu) or local
    image: str = ""
    mounts: list = field(default_factory=list)
    info: list = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.experiment_dir / CONFIG_FILE

    @property
    def script_path(self) -> Path:
        return self.experiment_dir / RUN_SCRIPT

    @property
    def trainer_config(self) -> str:
        """The config file as the trainer sees it."""
        if self.launcher == "docker":
            return f"{CONTAINER_RESULTS}/{self.config.experiment_name}/{CONFIG_FILE}"
        return str(self.config_path)


def _inside(path: Path, root: Path) -> Optional[str]:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def _parse_set(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError("--set", f"{text!r} is not KEY=VALUE (e.g. epochs=1 or fidelity.padded_test_set=true)")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _apply_sets(data: dict, settings: Iterable[tuple[str, object]]) -> None:
    """``--set`` keys and values (each checked as it comes, so that errors come in the command line's order)."""
    known = {f.name for f in fields(ExperimentConfig)} | set(SCHEMA1_METHOD_KEYS)
    for key, value in settings:
        top = flat_key(key).partition(".")[0]
        if top in MANAGED_KEYS:
            raise UsageError("--set", f"{top!r} is set by {MANAGED_KEYS[top]}, not --set")
        if top not in known:
            raise UsageError("--set", f"unknown config key {key.partition('.')[0]!r} (a key of a configuration's "
                                      "sections, e.g. schedule.epochs, or its flat name, epochs; docs/cli.md)")
        set_key(data, key, value)


def _check_dataset(db_path: str) -> Path:
    """Original items 4-6: the folder, the labels file, the image folder."""
    what = f"expected a CORe50 root holding {LABELS_FILE} and {IMAGES_DIR}/"
    db = Path(db_path).expanduser()
    if not db.exists():
        raise UsageError("DB_PATH", f"{db_path!r} does not exist ({what})")
    if not db.is_dir():
        raise UsageError("DB_PATH", f"{db_path!r} is not a folder ({what})")
    db = db.resolve()
    labels = db / LABELS_FILE
    if not labels.is_file():
        raise UsageError("DB_PATH", f"{labels} is missing ({what}; it lists the {NUM_CLASSES} object names)")
    try:
        names = [ln for ln in labels.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("DB_PATH", f"{labels} cannot be read ({exc.__class__.__name__}: {exc})") from None
    if len(names) != NUM_CLASSES:
        raise UsageError("DB_PATH", f"{labels} has {len(names)} object names, expected {NUM_CLASSES}")
    if not (db / IMAGES_DIR).is_dir():
        raise UsageError("DB_PATH", f"{db / IMAGES_DIR} is missing ({what}; "
                                    f"{IMAGES_DIR}/s<S>/o<O>/C_<ss>_<oo>_<fff>.png)")
    return db


def _default_filelists(db: Path) -> Path:
    """DB_PATH/batch_filelists if present, else the shipped official lists."""
    from .data.filelists import FilelistError, default_filelists_root

    try:
        return default_filelists_root(db)
    except FilelistError as exc:
        raise UsageError("--filelists", str(exc)) from None


def _filelists_hint(path: Path, db: Path, missing_frames: bool = False) -> str:
    """What to do when the filelists at ``path`` lack a scenario or run, or name frames DB_PATH lacks ("" if
    nothing more can be said)."""
    from .data.filelists import FilelistError, shipped_filelists_root

    try:
        shipped = path == shipped_filelists_root()
    except FilelistError:
        shipped = False
    q = shlex.quote
    if missing_frames:
        return (f"the shipped lists name frames of the full CORe50; for a partial dataset make lists of its "
                f"frames: latent-replay filelists make {q(str(db))} --out {q(str(db / 'batch_filelists'))}, "
                "used by default") if shipped else ""
    if shipped:
        return f"the shipped lists hold runs 0-4; all 10 official runs: latent-replay download filelists --root {q(str(db))}"
    return f"make them with: latent-replay filelists make {q(str(db))} --out {q(str(path))}"


def _check_filelists(path: Path, scenario: int, runs: list[int], images_dir: Path, db: Path) -> None:
    from .data.filelists import FilelistError, PathIndex
    from .data.nicv2 import load_scenario

    if not path.is_dir():
        raise UsageError("--filelists", f"{path} is not a folder of NICv2 filelists "
                                        f"({_filelists_hint(path, db)}, or pass --filelists DIR)")
    index = PathIndex(images_dir)
    try:
        for run in runs:
            sc = load_scenario(path, scenario, run)
            for fl in (*sc.batches, sc.test):
                index.check(fl)
    except FilelistError as exc:
        msg, hint = str(exc), ""
        if "no folder for NICv2" in msg:
            hint = _filelists_hint(path, db)
        elif " does not exist under " in msg:
            hint = _filelists_hint(path, db, missing_frames=True)
        raise UsageError("--filelists", f"{msg} ({hint})" if hint else msg) from None


def _check_filelists_once(memo: dict | None, path: Path, scenario: int, runs: list[int], images_dir: Path,
                          db: Path) -> None:
    if memo is None:
        return _check_filelists(path, scenario, runs, images_dir, db)
    key = (str(path), scenario, tuple(runs), str(images_dir), str(db))
    if key not in memo:
        try:
            _check_filelists(path, scenario, runs, images_dir, db)
            memo[key] = None
        except UsageError as exc:
            memo[key] = exc
    if memo[key] is not None:
        raise memo[key]


def validate(ns: argparse.Namespace, filelist_checks: dict | None = None) -> Plan:
    """All checks of the command line's arguments (:func:`build_parser`), in the original's order (spec §2.1
    items 1-14), then the new options; see :func:`plan_experiment` for the same from Python values."""
    return _validate(ns, map(_parse_set, ns.sets), filelist_checks)


def plan_experiment(method: str, scenario: int | str, replay: str, db_path: str | os.PathLike, *,
                    latent_layer: Optional[str] = None, replay_memory: Optional[int] = None,
                    nvidia_docker: str = "old", runs: str | Sequence[int] = DEFAULT_RUNS, launcher: str = "docker",
                    device: str = "auto", profile: str = "fixed", out: str | os.PathLike = DEFAULT_OUT,
                    filelists: str | os.PathLike | None = None, weights: str | os.PathLike | None = None,
                    image: Optional[str] = None, max_batches: Optional[int] = None, settings: Optional[dict] = None,
                    force: bool = False, filelist_checks: dict | None = None) -> Plan:
    """The launcher's plan from Python values (a sweep's experiments): the same checks, order and
    ``UsageError`` messages as the command line (:func:`validate`), each argument under its command-line
    name. ``method`` and ``replay`` may be the launcher's names (``AR1F``, ``pure``) or the config's
    (``ar1free``, ``native``); ``runs`` a list of run numbers; ``settings`` the other config keys and
    their values (``--set KEY=VALUE``); None leaves an option at its default.

    ``filelist_checks``: a dict shared by several calls (a sweep's expansion) so that the filelists and
    frames of one folder, scenario and run set are checked once (seconds each on the full CORe50).
    """
    paths = {name: None if value is None else os.fspath(value)
             for name, value in (("db_path", db_path), ("out", out), ("filelists", filelists), ("weights", weights))}
    ns = argparse.Namespace(
        method=_launcher_name(REGISTRY_METHODS, method), scenario=str(scenario),
        replay=_launcher_name(REGISTRY_REPLAYS, replay), latent_layer=latent_layer, replay_memory=replay_memory,
        nvidia_docker=nvidia_docker, runs=runs, launcher=launcher, device=device, profile=profile, image=image,
        max_batches=max_batches, force=force, **paths)
    return _validate(ns, (settings or {}).items(), filelist_checks)


def _int_value(argument: str, value, expected: str) -> int:
    """An integer argument: the command line's text, or an int from Python."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        if not isinstance(value, str):
            raise ValueError
        return int(value)
    except ValueError:
        raise UsageError(argument, f"invalid int value {value!r} ({expected})") from None


def _run_numbers(runs: str | Sequence[int]) -> list[int]:
    """``--runs``: the command line's list or range, or run numbers from Python."""
    if isinstance(runs, str):
        try:
            return parse_int_list(runs, name="--runs")
        except ValueError as exc:
            raise UsageError("--runs", str(exc).split(": ", 1)[-1]) from None
    if not runs or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in runs):
        raise UsageError("--runs", f"expected run numbers >= 0, got {runs!r}")
    return sorted(set(runs))


def _launcher_names(registry) -> dict[str, str]:
    """The launcher's name of each registered method or replay (its first alias, the original launcher's
    ``CWR``, ``AR1S``, ``AR1F``, ``no``, ``pure``; else its name) -> the registered name, in order."""
    return {(e.aliases or (e.name,))[0]: e.name for e in registry}


def _launcher_name(registry, name: str) -> str:
    """The launcher's name of a registered name or alias (``ar1free`` -> ``AR1F``); others as they are."""
    found = {v: k for k, v in _launcher_names(registry).items()}.get(registry.canonical(name))
    return found or name


def __getattr__(name: str):
    """``METHODS`` and ``REPLAYS``: the names the launcher accepts, read from the registries when asked
    for (so importing the launcher does not import every method)."""
    if name in ("METHODS", "REPLAYS"):
        return tuple(_launcher_names(REGISTRY_METHODS if name == "METHODS" else REGISTRY_REPLAYS))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _validate(ns, settings: Iterable[tuple[str, object]], filelist_checks: dict | None) -> Plan:
    info: list[str] = []
    # 1-3: method, scenario, replay
    methods, replays = _launcher_names(REGISTRY_METHODS), _launcher_names(REGISTRY_REPLAYS)
    if ns.method not in methods:
        raise _invalid_choice("METHOD", ns.method, tuple(methods))
    if ns.scenario not in SCENARIOS:
        raise _invalid_choice("SCENARIO", ns.scenario, SCENARIOS)
    if ns.replay not in replays:
        raise _invalid_choice("REPLAY", ns.replay, tuple(replays))
    method, scenario, replay = methods[ns.method], int(ns.scenario), replays[ns.replay]
    latent = replay in ("latent", "generative")
    # 4-6: dataset root, labels file, image folder
    db = _check_dataset(ns.db_path)
    # 7: docker flavour
    if ns.nvidia_docker not in NVIDIA_DOCKER:
        raise _invalid_choice("--nvidia_docker", ns.nvidia_docker, NVIDIA_DOCKER)
    flavour = NVIDIA_DOCKER[ns.nvidia_docker]
    # 8: latent layer name
    layer = DEFAULT_LAYER if ns.latent_layer is None else ns.latent_layer
    if layer not in LATENT_LAYERS:
        raise _invalid_choice("--latent_layer", layer, LATENT_LAYERS)
    # 9: an explicit layer needs a latent replay
    if ns.latent_layer is not None and not latent:
        raise UsageError("--latent_layer", f"only used with latent or generative replay (REPLAY is {ns.replay!r}; "
                                           "leave the option out or choose REPLAY latent)")
    # 10-11: CWR* trains only the classifier, so its latent replay is at pool6
    if method == "cwr" and latent:
        if ns.latent_layer is not None and layer != "pool6":
            raise UsageError("--latent_layer", f"CWR trains only the classifier, so {ns.replay} replay must use "
                                               f"pool6 (got {layer!r}; leave the option out or choose pool6)")
        if ns.latent_layer is None:
            layer = "pool6"
            info.append(f"CWR with {ns.replay} replay: latent layer pool6 (the only one CWR* supports)")
    # 12: memory size
    if ns.replay_memory is None:
        memory = DEFAULT_MEMORY
    else:
        memory = _int_value("--replay_memory", ns.replay_memory, "expected an integer > 0")
        if memory <= 0:
            raise UsageError("--replay_memory", f"must be an integer > 0, got {memory}")
    # 13: a memory without replay
    if ns.replay_memory is not None and replay == "none":
        raise UsageError("--replay_memory", "only used with replay (REPLAY is 'no'; choose pure, latent or generative)")
    # 14 (info line, printed below only when a memory is in use) -- then the new rules and options
    if method == "joint" and replay != "none":
        raise UsageError("REPLAY", f"JOINT retrains on all the data seen so far and takes no replay "
                                   f"(got {ns.replay!r}; choose no)")
    runs = _run_numbers(ns.runs)
    if ns.launcher not in LAUNCHERS:
        raise _invalid_choice("--launcher", ns.launcher, LAUNCHERS)
    if ns.device not in DEVICES:
        raise _invalid_choice("--device", ns.device, DEVICES)
    if ns.profile not in PROFILES:
        raise _invalid_choice("--profile", ns.profile, PROFILES)
    docker = ns.launcher == "docker"
    out_dir = Path(ns.out).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError("--out", f"{ns.out!r} is not a folder")
    filelists = Path(ns.filelists).expanduser().resolve() if ns.filelists else _default_filelists(db)
    _check_filelists_once(filelist_checks, filelists, scenario, runs, db / IMAGES_DIR, db)
    weights = None
    if ns.weights is not None:
        weights = Path(ns.weights).expanduser().resolve()
        if not weights.is_file():
            raise UsageError("--weights", f"{ns.weights!r} is not a file (a converted checkpoint, pytorchcv "
                                          "state dict or .caffemodel; see models/README.md)")
    image = ns.image if ns.image is not None else default_image()
    if not image or any(c.isspace() for c in image) or image.startswith("-"):
        raise UsageError("--image", f"{image!r} is not an image name (NAME[:TAG])")
    max_batches = None
    if ns.max_batches is not None:
        max_batches = _int_value("--max_batches", ns.max_batches, "expected an integer >= 1")
        if max_batches < 1:
            raise UsageError("--max_batches", f"must be an integer >= 1, got {max_batches}")

    # Paths as the trainer sees them.
    mounts: list[Mount] = []
    if docker:
        for name, path in (("DB_PATH", db), ("--out", out_dir), ("--filelists", filelists), ("--weights", weights)):
            if path is not None and ":" in str(path):
                raise UsageError(name, f"{path}: docker -v cannot mount a path containing ':' (move it, or use "
                                       "--launcher local)")
        mounts.append(Mount(db, CONTAINER_DATASETS))
        rel = _inside(filelists, db)
        if rel is not None:
            filelists_seen = f"{CONTAINER_DATASETS}/{rel}" if rel != "." else CONTAINER_DATASETS
        else:
            mounts.append(Mount(filelists, CONTAINER_FILELISTS))
            filelists_seen = CONTAINER_FILELISTS
        weights_seen = None
        if weights is not None:
            rel = _inside(weights, db)
            if rel is not None:
                weights_seen = f"{CONTAINER_DATASETS}/{rel}"
            else:
                weights_seen = f"{CONTAINER_WEIGHTS}/{weights.name}"
                mounts.append(Mount(weights, weights_seen))
        mounts.append(Mount(out_dir, CONTAINER_RESULTS, read_only=False))
        paths = dict(dataset_root=CONTAINER_DATASETS, filelists=filelists_seen, weights=weights_seen,
                     out=CONTAINER_RESULTS)
    else:
        paths = dict(dataset_root=str(db), filelists=str(filelists), weights=str(weights) if weights else None,
                     out=str(out_dir))

    data = dict(method=method, scenario=scenario, replay=replay, latent_layer=layer, replay_memory=memory,
                runs=runs, device=ns.device, profile=ns.profile, max_batches=max_batches, **paths)
    try:
        ExperimentConfig.from_dict(dict(data), "configuration")
    except ConfigError as exc:   # every combination rule above should have caught it first
        raise UsageError(None, str(exc)) from None
    _apply_sets(data, settings)   # nothing to apply: the same data, accepted just above
    try:
        cfg = ExperimentConfig.from_dict(data, "configuration")
    except ConfigError as exc:
        raise UsageError("--set", str(exc).removeprefix("configuration: ")) from None
    if ns.replay_memory is None and cfg.memory_in_use:   # original item 14, now only when a memory is used
        info.append(f"replay memory not given: {DEFAULT_MEMORY} patterns")

    experiment_dir = out_dir / cfg.experiment_name
    existing = [p for p in (experiment_dir / CONFIG_FILE, experiment_dir / RUN_SCRIPT) if p.exists()]
    if existing and not ns.force:
        raise UsageError("--force", f"{experiment_dir} already holds a prepared experiment ({existing[0].name}); "
                                    "add --force to replace its configuration and run script (finished runs trained with other "
                                    "settings are then set aside)")
    gpu = docker and ns.device != "cpu"
    return Plan(config=cfg, launcher=ns.launcher, experiment_dir=experiment_dir, out_dir=out_dir,
                flavour=flavour if gpu else None, image=image if docker else "", mounts=mounts, info=info)


# ------------------------------------------------------------------------------------ run scripts
def describe(cfg: ExperimentConfig) -> str:
    """One line: method, scenario, replay, memory, runs."""
    if cfg.replay == "none":
        replay = "no replay"
    elif cfg.replay == "native":
        replay = f"native replay, memory {cfg.replay_memory}"
    else:
        replay = f"{cfg.replay} replay at {cfg.latent_layer}, memory {cfg.replay_memory}"
    return (f"{REGISTRY_METHODS.get(cfg.method).title} on NICv2-{cfg.scenario}, {replay}, runs {format_int_list(cfg.runs)}, "
            f"device {cfg.device}, profile {cfg.profile}")


def trainer_python() -> tuple[Path, bool]:
    """The Python a local run script trains with, and whether it has PyTorch.

    This Python when it can import torch; else (e.g. ``prepare_experiment.py`` started by a system
    ``python3`` without PyTorch) the checkout's ``.venv``, which ``make demo`` and ``make test`` create."""
    if importlib.util.find_spec("torch") is not None:
        return Path(sys.executable), True
    root = repo_root()
    venv = root / ".venv" if root is not None else None
    if venv is not None and (venv / "bin" / "python").is_file():
        return venv / "bin" / "python", any(venv.glob("lib/python*/site-packages/torch/__init__.py"))
    return Path(sys.executable), False


def trainer_command() -> tuple[list[str], dict[str, str]]:
    """How the local run script starts the trainer: the console script next to :func:`trainer_python`,
    or ``python -m`` with this checkout on ``PYTHONPATH``."""
    python = trainer_python()[0]
    script = python.parent / "latent-replay"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)], {}
    return [str(python), "-m", "latent_replay.cli"], {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _header(cfg: ExperimentConfig, how: str) -> list[str]:
    return [
        "#!/usr/bin/env bash",
        f"# Experiment {cfg.experiment_name}:",
        f"#   {describe(cfg)}.",
        f"# Written by {PROG} (latent-replay {__version__}); {how}.",
        "# Arguments are passed on to `latent-replay train`, e.g. --force (train finished runs again) or --runs 0.",
        "set -euo pipefail",
        "",
    ]


def render_docker_script(plan: Plan, repo: Optional[Path] = None) -> str:
    """``docker run --rm`` of the image: GPU option, read-only data, writable results, the caller's uid/gid."""
    cfg, q = plan.config, shlex.quote
    if plan.flavour is None:
        gpu_how, gpu_options = "no GPU (--device cpu)", []
    else:
        gpu_how = f"GPU via {'nvidia-docker2' if plan.flavour == 'old' else 'nvidia-container-toolkit'}"
        gpu_options = [" ".join(GPU_OPTIONS[plan.flavour])]
    lines = _header(cfg, f"trains in the image {plan.image}, {gpu_how}")
    lines.insert(5, "# DOCKER=podman selects another docker-compatible command.")
    lines += ['docker="${DOCKER:-docker}"', f"image={q(plan.image)}"]
    if repo is not None:
        lines += [f"checkout={q(str(repo))}"]
        build = ("printf 'run_experiment.sh: image %s is not available to %s; build it with: %s build -t %s %q\\n' \\",
                 '        "$image" "$docker" "$docker" "$image" "$checkout" >&2')
    else:
        build = ("printf 'run_experiment.sh: image %s is not available to %s; build it with: %s build -t %s "
                 "<latent-replay checkout>\\n' \\", '        "$image" "$docker" "$docker" "$image" >&2')
    lines += [
        "",
        'if ! "$docker" image inspect "$image" >/dev/null 2>&1; then',
        f"    {build[0]}",
        build[1],
        "    exit 1",
        "fi",
        f"mkdir -p {q(str(plan.out_dir))}",
        "tty=()",
        "if [ -t 0 ] && [ -t 1 ]; then tty=(-it); fi",
        "",
        "status=0",
        '"$docker" run --rm --init ${tty[@]+"${tty[@]}"} \\',
    ]
    options = gpu_options + [
        "--network none",
        '--user "$(id -u):$(id -g)"',
        f'-e "GLIBC_TUNABLES=${{GLIBC_TUNABLES:-{GLIBC_TUNABLES}}}"',
        *(f"-v {q(m.spec)}" for m in plan.mounts),
        '"$image"',
        f'train --config {q(plan.trainer_config)} "$@" || status=$?',
    ]
    continued = " \\"
    lines += [f"    {opt}{continued if i < len(options) - 1 else ''}" for i, opt in enumerate(options)]
    lines += ['if [ "$status" -ne 0 ]; then']
    if plan.flavour is None:
        lines += ["    printf 'run_experiment.sh: training failed (exit %s)\\n' \"$status\" >&2"]
    elif repo is not None:
        lines += ["    printf 'run_experiment.sh: training failed (exit %s); if the error is about the GPU or the nvidia "
                  "runtime, run %q\\n' \\",
                  f'        "$status" "$checkout/docker/{FIRST_CHECK[plan.flavour]}" >&2']
    else:
        lines += ["    printf 'run_experiment.sh: training failed (exit %s); if the error is about the GPU or the nvidia "
                  f"runtime, run docker/{FIRST_CHECK[plan.flavour]} of the latent-replay checkout\\n' \"$status\" >&2"]
    lines += ["fi", 'exit "$status"', ""]
    return "\n".join(lines)


def render_local_script(plan: Plan, command: Sequence[str], env: dict[str, str]) -> str:
    """The same trainer command without a container."""
    cfg, q = plan.config, shlex.quote
    lines = _header(cfg, "runs the trainer on this machine")
    lines.append(f'export GLIBC_TUNABLES="${{GLIBC_TUNABLES:-{GLIBC_TUNABLES}}}"')
    for key, value in env.items():
        lines.append(f'export {key}={q(value)}"${{{key}:+:${key}}}"')
    lines += [f"exec {' '.join(q(c) for c in command)} train --config {q(plan.trainer_config)} \"$@\"", ""]
    return "\n".join(lines)


def render_script(plan: Plan) -> str:
    if plan.launcher == "docker":
        return render_docker_script(plan, repo_root())
    command, env = trainer_command()
    return render_local_script(plan, command, env)


# ---------------------------------------------------------------------------------------- writing
def write_plan(plan: Plan) -> list[tuple[Path, Path, list[str]]]:
    """Write the config and the run script atomically (temporary files in the folder, then rename).
    Then the finished runs that the replaced configuration trained otherwise are set aside
    (:func:`~latent_replay.results.set_aside_stale`), and returned: where a write fails, nothing is
    moved (and a run left in place is still refused by the trainer and left out of figures)."""
    plan.experiment_dir.mkdir(parents=True, exist_ok=True)
    files = [(plan.config_path, plan.config.to_json(), 0o644), (plan.script_path, render_script(plan), 0o755)]
    temps = []
    try:
        for path, text, mode in files:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append(tmp)
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
            os.chmod(tmp, mode)
        for (path, _, _), tmp in zip(files, temps):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return set_aside_stale(plan.experiment_dir, plan.config)


# -------------------------------------------------------------------------------------- entry points
def _display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Run the launcher; returns the exit code (0 ok, 1 write failure, 2 rejected argument)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["list_layers"]:
        print("\n".join(LATENT_LAYERS))
        return 0
    try:
        ns = build_parser(prog).parse_args(argv)
        plan = validate(ns)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:   # -h
        return int(exc.code or 0)
    try:
        set_aside = write_plan(plan)
    except OSError as exc:
        where = exc.filename or plan.experiment_dir
        print(f"{prog}: error: cannot write the experiment to {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for line in plan.info:
        print(f"info: {line}")
    for line in set_aside_lines(set_aside, _display):
        print(f"info: {line}")
    python, has_torch = trainer_python()
    if plan.launcher == "local" and not has_torch:
        print(f"warning: the run script will use {python}, which has no PyTorch: it will fail until PyTorch is "
              "installed there (make test creates the checkout's .venv with everything)", file=sys.stderr)
    print(f"experiment {plan.config.experiment_name}: {describe(plan.config)}")
    print(f"wrote {_display(plan.config_path)}")
    print(f"wrote {_display(plan.script_path)}")
    if plan.launcher == "docker" and plan.flavour is not None:
        print(f"first time on this machine? check the GPU with docker/{FIRST_CHECK[plan.flavour]}")
    print(f"start it with: {shlex.quote(_display(plan.script_path))}")
    return 0


@click.command("prepare", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def prepare_command(ctx, args):
    """Write an experiment's config and run script.

    The same command as run_experiments/prepare_experiment.py, with the same arguments (-h lists them).
    """
    ctx.exit(main(list(args), prog="latent-replay prepare"))
