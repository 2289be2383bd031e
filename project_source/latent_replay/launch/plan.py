"""The launcher's plan: :class:`Plan` (the config to write and how the run script starts the trainer), made
by :func:`validate` from the command line or by :func:`plan_experiment` from Python values."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..config import ConfigError, ExperimentConfig, flat_key
from ..registry import METHODS as REGISTRY_METHODS
from ..registry import REPLAYS as REGISTRY_REPLAYS
from ..results import CONFIG_FILE
from .args import DEFAULT_MEMORY, DEFAULT_OUT, DEFAULT_RUNS, UsageError, _apply_sets, _launcher_name, _parse_set
from .checks import new_options, original_items
from .mounts import CONTAINER_RESULTS, trainer_paths

RUN_SCRIPT = "run_experiment.sh"


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


def _validate(ns, settings: Iterable[tuple[str, object]], filelist_checks: dict | None) -> Plan:
    info: list[str] = []
    original = original_items(ns, info)   # 1-13
    # 14 (info line, printed below only when a memory is in use) -- then the new rules and options
    options = new_options(ns, original, filelist_checks)
    docker = ns.launcher == "docker"
    # Paths as the trainer sees them.
    mounts, paths = trainer_paths(docker, original.db, options.out_dir, options.filelists, options.weights)
    data = dict(method=original.method, scenario=original.scenario, replay=original.replay,
                latent_layer=original.layer, replay_memory=original.memory, runs=options.runs, device=ns.device,
                profile=ns.profile, max_batches=options.max_batches, **paths)
    cfg = _config(data, settings)
    if ns.replay_memory is None and cfg.memory_in_use:   # original item 14, now only when a memory is used
        info.append(f"replay memory not given: {DEFAULT_MEMORY} patterns")
    experiment_dir = _experiment_dir(options.out_dir, cfg, ns.force)
    gpu = docker and ns.device != "cpu"
    return Plan(config=cfg, launcher=ns.launcher, experiment_dir=experiment_dir, out_dir=options.out_dir,
                flavour=original.flavour if gpu else None, image=options.image if docker else "", mounts=mounts,
                info=info)


def _config(data: dict, settings: Iterable[tuple[str, object]]) -> ExperimentConfig:
    """The config of the checked arguments, then with the ``--set`` keys."""
    try:
        ExperimentConfig.from_dict(dict(data), "configuration")
    except ConfigError as exc:   # every combination rule above should have caught it first
        raise UsageError(None, str(exc)) from None
    given: list[str] = []

    def recorded():   # the keys as the command line spelt them (parsed one by one, in order)
        for key, value in settings:
            given.append(key)
            yield key, value

    _apply_sets(data, recorded())   # nothing to apply: the same data, accepted just above
    try:
        return ExperimentConfig.from_dict(data, "configuration")
    except ConfigError as exc:
        message = str(exc).removeprefix("configuration: ")
        key = message.partition(":")[0]
        spelt = [k for k in given if k != key and flat_key(k) == key]   # schedule.epochs for epochs
        raise UsageError("--set", spelt[-1] + message[len(key):] if spelt else message) from None


def _experiment_dir(out_dir: Path, cfg: ExperimentConfig, force: bool) -> Path:
    """``<out>/<experiment_name>``, refused when it holds a prepared experiment and ``--force`` is not given."""
    experiment_dir = out_dir / cfg.experiment_name
    existing = [p for p in (experiment_dir / CONFIG_FILE, experiment_dir / RUN_SCRIPT) if p.exists()]
    if existing and not force:
        raise UsageError("--force", f"{experiment_dir} already holds a prepared experiment ({existing[0].name}); "
                                    "add --force to replace its configuration and run script (finished runs trained with other "
                                    "settings are then set aside)")
    return experiment_dir
