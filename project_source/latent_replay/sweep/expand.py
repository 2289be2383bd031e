"""Grid expansion: every combination of a sweep's grid through the launcher's checks
(:func:`latent_replay.launch.plan_experiment`), giving the experiments, the combinations skipped and why."""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field

from .. import launch
from ..config import ConfigError, ExperimentConfig, applies, without
from ..config.sections import SCHEMA1_METHOD_KEYS
from .schema import Sweep, SweepError

#: Config keys the launcher takes as their own argument (everything else goes through ``settings``).
ARGUMENTS = ("latent_layer", "replay_memory", "profile", "max_batches")
#: Launcher arguments that are the same for every combination: an error there is the sweep's, not a combination's.
GLOBAL_ARGUMENTS = {"DB_PATH": "db_path", "--filelists": "filelists", "--weights": "weights", "--image": "image",
                    "--out": "out", "--runs": "runs", "--device": "device", "--nvidia_docker": "nvidia_docker"}
#: Keys the default experiment name already encodes; other grid keys are appended to the name.
NAMED_KEYS = ("method", "scenario", "replay", "latent_layer", "replay_memory", "latent_dtype", "profile",
              "glr_profile", "glr.mode", "glr.sampling")


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


def describe_values(values: dict) -> str:
    return ", ".join(f"{k}={_text(v)}" for k, v in values.items()) or "(no grid)"


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def launcher_arguments(sweep: Sweep, values: dict) -> dict:
    """The keyword arguments of :func:`latent_replay.launch.plan_experiment` for one combination."""
    v = dict(values)
    args = {key: v.pop(key, getattr(ExperimentConfig, key)) for key in ("method", "scenario", "replay")}
    args["db_path"] = sweep.db_path
    args.update((key, v.pop(key)) for key in ARGUMENTS if key in v)
    args.update(runs=list(sweep.runs), device=sweep.device, out=sweep.out, nvidia_docker=sweep.nvidia_docker,
                force=True, launcher="local" if sweep.container == "none" else "docker",
                image=sweep.image if sweep.container == "docker" else None, filelists=sweep.filelists,
                weights=sweep.weights, settings=v)
    return args


def combinations(sweep: Sweep) -> list[tuple[int, dict]]:
    """(grid number, values) of every combination, grid after grid, in the order of the file."""
    out = []
    for i, grid in enumerate(sweep.grid):
        keys = list(grid)
        out += [(i, dict(zip(keys, values))) for values in itertools.product(*(grid[k] for k in keys))]
    return out


def _plan(sweep: Sweep, values: dict, filelist_checks: dict) -> launch.Plan:
    """The launcher's plan of one combination; an error common to every combination is the sweep's."""
    try:
        return launch.plan_experiment(**launcher_arguments(sweep, values), filelist_checks=filelist_checks)
    except launch.UsageError as exc:
        if exc.argument in GLOBAL_ARGUMENTS:
            raise SweepError(f"{sweep.source}: {GLOBAL_ARGUMENTS[exc.argument]}: {exc.message}") from None
        raise


def _names_method_param(key: str) -> bool:
    """A method's parameter: the default experiment name encodes each one that differs from its default."""
    return key.startswith("method_params.") or key in SCHEMA1_METHOD_KEYS


def _name_extra_keys(plan: launch.Plan, shown: dict) -> None:
    """Grid keys the default experiment name does not encode are appended to it."""
    extra = [(k, v) for k, v in shown.items() if k not in NAMED_KEYS and not _names_method_param(k)]
    if extra:
        name = "_".join([plan.config.experiment_name, *(f"{_slug(k)}-{_slug(_text(v))}" for k, v in extra)])
        plan.config = plan.config.replace(name=name)
        plan.experiment_dir = plan.out_dir / name


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
            plan = _plan(sweep, values, filelist_checks)
        except launch.UsageError as exc:
            result.skipped.append((combo, str(exc)))
            for marker in markers:
                rejected.setdefault(marker, str(exc))
            continue
        accepted.update(markers)
        _name_extra_keys(plan, shown)
        for line in plan.info:
            notes.setdefault(line)
        result.dropped |= dropped & set(combo)
        name = plan.config.experiment_name
        if name in by_name:
            _check_same(sweep, by_name[name], plan, shown)
            result.merged += 1
            continue
        by_name[name] = Planned(plan, shown)
    result.experiments = list(by_name.values())
    result.notes = list(notes)
    _check_every_value_used(sweep, result, accepted, rejected)
    return result


def _check_same(sweep: Sweep, known: Planned, plan: launch.Plan, shown: dict) -> None:
    """Two combinations that give one experiment name must give one configuration."""
    if _comparable(known.plan.config) != _comparable(plan.config):
        raise SweepError(f"{sweep.source}: grid: {describe_values(known.values)} and {describe_values(shown)} give "
                         f"the same experiment name {plan.config.experiment_name!r} with different configurations")


def _check_every_value_used(sweep: Sweep, result: Expansion, accepted: set, rejected: dict) -> None:
    """No experiment at all, or a grid value that no combination accepts, is a mistake, not a combination to skip."""
    if not result.experiments:
        first = f" (first: {describe_values(result.skipped[0][0])}: {result.skipped[0][1]})" if result.skipped else ""
        raise SweepError(f"{sweep.source}: no valid experiment in the grid{first}")
    for (grid, key, marker), why in rejected.items():
        if (grid, key, marker) not in accepted:
            where = "grid" if len(sweep.grid) == 1 else f"grid[{grid}]"
            raise SweepError(f"{sweep.source}: {where}.{key}: {_text(json.loads(marker))} gives no valid experiment "
                             f"({why})")


def _comparable(config: ExperimentConfig) -> dict:
    """A config's file form, dotted, without the keys a task changes (the trainer saves the config with
    the task's run only)."""
    return without(config.to_dict(), ("execution.runs",))


def check_existing(expansion: Expansion, force: bool) -> list[str]:
    """Experiments already in the sweep folder must have been prepared with the same configuration."""
    replaced = []
    for p in expansion.experiments:
        path = p.plan.config_path
        if not path.is_file():
            continue
        try:
            old = _comparable(ExperimentConfig.load(path))
        except ConfigError as exc:
            old, why = None, f"its configuration cannot be read ({exc})"
        else:
            new = _comparable(p.plan.config)
            diff = [k for k in new.keys() | old.keys() if old.get(k) != new.get(k)]
            diff.sort()
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
