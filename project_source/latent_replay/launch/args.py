"""The launcher's command line: the accepted values, :class:`UsageError`, the parser, value parsing, ``--set``."""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from typing import Iterable, Optional, Sequence

from .. import __version__
from ..config import PROFILES, ExperimentConfig, flat_key, set_key
from ..config import SCENARIOS as CONFIG_SCENARIOS
from ..config.sections import SCHEMA1_METHOD_KEYS
from ..data.classes import IMAGES_DIR, LABELS_FILE
from ..registry import METHODS as REGISTRY_METHODS
from ..registry import REPLAYS as REGISTRY_REPLAYS
from ..utils import parse_int_list

PROG = "prepare_experiment.py"

SCENARIOS = tuple(map(str, CONFIG_SCENARIOS))   # as the command line spells them
#: Accepted ``--nvidia_docker`` spellings and the flavour they stand for (original item 7).
NVIDIA_DOCKER = {"old": "old", "nvidia-docker2": "old", "new": "new", "nvidia-container-toolkit": "new"}
LAUNCHERS = ("docker", "local")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_LAYER = "conv5_4/dw"
DEFAULT_MEMORY = 1500
DEFAULT_RUNS = "0-4"
DEFAULT_OUT = "results"
#: Config keys set by a dedicated argument (``--set`` refuses them and names the argument).
MANAGED_KEYS = {
    "method": "METHOD", "scenario": "SCENARIO", "replay": "REPLAY", "dataset_root": "DB_PATH",
    "latent_layer": "--latent_layer", "replay_memory": "--replay_memory", "runs": "--runs",
    "device": "--device", "profile": "--profile", "out": "--out", "filelists": "--filelists",
    "weights": "--weights", "max_batches": "--max_batches",
}


def default_image() -> str:
    return f"latent-replay:{__version__}"


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
