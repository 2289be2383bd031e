"""The experiments of a set of result folders, as the figures group them: :class:`Experiment` (a config and
its finished runs, read through :mod:`latent_replay.results`) and :func:`load_experiments`."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..config import LATENT_DTYPES, LATENT_LAYERS, SECTION_KEYS, ConfigError, ExperimentConfig, applies, flatten
from ..registry import METHODS, REPLAYS
from ..results import CONFIG_FILE, experiment_folders, finished_runs

log = logging.getLogger(__package__)   # "latent_replay.figures", as before the split

#: Flat keys the figures show through other means (their own dimension, the profile's name).
_SHOWN_KEYS = {"method", "scenario", "replay", "latent_layer", "replay_memory", "latent_dtype", "profile", "fidelity"}


@dataclass
class Experiment:
    """One experiment folder: its configuration, finished runs and what was left out (and why)."""

    path: Path
    config: ExperimentConfig
    runs: list = field(default_factory=list)
    left_out: list = field(default_factory=list)
    missing_runs: list = field(default_factory=list)
    #: Config differences from the other experiments that the named dimensions do not cover
    #: (``key=value`` strings, set by :func:`load_experiments`), and a folder tag for identical configs.
    extras: tuple = ()
    tag: str = ""

    # ---- what was trained
    @property
    def name(self) -> str:
        return self.config.experiment_name

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def scenario(self) -> int:
        return self.config.scenario

    @property
    def replay(self) -> str:
        return self.config.replay

    @property
    def profile(self) -> str:
        return self.config.profile

    @property
    def layer(self) -> str | None:
        """Replay layer (``data`` for native replay), None without replay."""
        return self.config.resolved_latent_layer if self.config.uses_replay else None

    @property
    def memory(self) -> int | None:
        return self.config.replay_memory if self.config.uses_replay else None

    @property
    def storage(self) -> str | None:
        """How the memory is stored: ``images`` (native), a latent dtype, or None without replay."""
        if not self.config.uses_replay:
            return None
        return self.config.latent_dtype if self.config.uses_latent else "images"

    @property
    def finished(self) -> bool:
        return bool(self.runs)

    def sort_key(self) -> tuple:
        return (self.scenario, METHODS.names().index(self.method), REPLAYS.names().index(self.replay),
                LATENT_LAYERS.index(self.layer) if self.layer else -1, self.memory or 0,
                _dtype_rank(self.storage), self.profile, self.extras, self.tag, str(self.path))

    # ---- per-run values (percent for accuracies)
    def values(self, what: str) -> np.ndarray:
        scale = 100.0 if "accuracy" in what else 1.0
        return np.array([getattr(r, what) * scale for r in self.runs], dtype=float)

    @property
    def device(self) -> str:
        devices = Counter(r.device for r in self.runs)
        return devices.most_common(1)[0][0] if devices else "unknown device"


def _dtype_rank(storage: str | None) -> int:
    order = ("images",) + LATENT_DTYPES + ("generative",)
    return order.index(storage) if storage in order else -1


def _read_experiment(exp_dir: Path, notes: list[str]) -> Experiment | None:
    try:
        cfg = ExperimentConfig.load(exp_dir / CONFIG_FILE)
    except ConfigError as exc:
        notes.append(f"{exp_dir}: left out, invalid configuration ({exc})")
        log.warning("left out %s: %s", exp_dir, exc)
        return None
    exp = Experiment(exp_dir, cfg)
    exp.runs, exp.left_out, exp.missing_runs = finished_runs(exp_dir, cfg)
    lengths = Counter(r.batches for r in exp.runs)
    if len(lengths) > 1:
        notes.append(f"{exp_dir}: finished runs cover different numbers of batches "
                     f"({', '.join(f'{n} batches x{c}' for n, c in sorted(lengths.items()))}); curves average what is there")
    short = [r for r in exp.runs if isinstance(r.summary.get("scenario_batches"), int)
             and r.batches < r.summary["scenario_batches"]]
    if short:
        which = ", ".join(f"run {r.number}: {r.batches} of {r.summary['scenario_batches']}" for r in short)
        notes.append(f"{exp_dir}: stopped before the end of the scenario by max_batches ({which} batches); "
                     "the final accuracy of such a run is that of the last batch it trained")
    for msg in exp.left_out:
        notes.append(f"{exp_dir}: {msg}; left out")
        log.warning("%s %s; left out", exp_dir, msg)
    if exp.missing_runs:
        notes.append(f"{exp_dir}: configured run(s) {', '.join(map(str, exp.missing_runs))} not found")
        log.info("%s: configured run(s) %s not found", exp_dir, ", ".join(map(str, exp.missing_runs)))
    if not exp.runs:
        notes.append(f"{exp_dir}: no finished run; experiment left out")
        log.warning("%s: no finished run; experiment left out", exp_dir)
    return exp


def load_experiments(result_dirs: Iterable[str | Path], notes: list[str] | None = None) -> list[Experiment]:
    """Every experiment (a folder holding ``exp_configuration.json``) under ``result_dirs``, sorted.

    Experiments without a finished run are included (``finished`` is False) so they can be reported;
    problems (invalid configs, partial runs, missing runs) are appended to ``notes`` and logged.
    """
    notes = [] if notes is None else notes
    roots = [Path(root) for root in result_dirs]
    for root in roots:
        if not root.exists():
            notes.append(f"{root}: does not exist")
            log.warning("%s does not exist", root)
    experiments = [e for d in experiment_folders(roots) if (e := _read_experiment(d, notes)) is not None]
    _set_extras(experiments)
    return sorted(experiments, key=Experiment.sort_key)


def _flat_config(flat: dict) -> dict:
    """What an experiment computes that the figures' dimensions do not show, as flat ``key: value``,
    from its config's flat form (:meth:`~latent_replay.config.ExperimentConfig.to_flat`): the keys of
    its identity's sections that apply to it (not ``execution`` or ``paths``), and the fidelity
    switches that differ from its profile's."""
    where = {k for section in ("execution", "paths") for k in SECTION_KEYS[section]}
    data = {k: v for k, v in flatten(flat).items()
            if k.partition(".")[0] not in where | _SHOWN_KEYS and v != {} and applies(k, flat)}
    data.update({f"fidelity.{k}": v for k, v in flat["fidelity"].items()})
    return data


def _set_extras(experiments: list[Experiment]) -> None:
    """Fill ``extras`` (config keys that differ between experiments) and ``tag`` (identical configs)."""
    configs = [e.config.to_flat() for e in experiments]
    flats = [_flat_config(c) for c in configs]
    keys = sorted({k for f in flats for k in f})
    varying = [k for k in keys if len({repr(f.get(k)) for f in flats if k in f}) > 1
               or any(k not in f and applies(k, c) for f, c in zip(flats, configs))]
    for e, f in zip(experiments, flats):  # None: not set (derived or the profile's default)
        e.extras = tuple(f"{k}={f[k]}" for k in varying if f.get(k) is not None)
    groups: dict[tuple, list[Experiment]] = {}
    for e in experiments:
        groups.setdefault(_identity(e), []).append(e)
    for same in groups.values():
        if len(same) > 1:
            for e in same:
                e.tag = f"{e.path.parent.name}/{e.path.name}"


def _identity(e: Experiment) -> tuple:
    return (e.method, e.scenario, e.replay, e.layer, e.memory, e.storage, e.profile, e.extras)
