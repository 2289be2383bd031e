"""The run script ``run_experiment.sh`` of a :class:`~latent_replay.launch.plan.Plan`: ``docker run`` of the
image, or the trainer on this machine (with the Python that has PyTorch)."""
from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from .. import __version__
from ..config import ExperimentConfig
from ..registry import METHODS as REGISTRY_METHODS
from ..utils import format_int_list
from .args import PROG
from .plan import Plan

#: How the run script passes the GPU to ``docker run`` (spec §2.2 item 3).
GPU_OPTIONS = {"old": ("--runtime=nvidia",), "new": ("--gpus", "all")}
#: The first-check script of each flavour (``docker/first_check_*.sh``).
FIRST_CHECK = {"old": "first_check_nvidia-docker2.sh", "new": "first_check_nvidia-container-toolkit.sh"}
#: Keep freed memory instead of returning it to the kernel: roughly doubles PyTorch CPU throughput.
GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736"


def repo_root() -> Optional[Path]:
    """The source checkout holding this package (``None`` for an installed copy)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "run_experiments").is_dir() and (root / "docker").is_dir() else None


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
    return [str(python), "-m", "latent_replay.cli"], {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}


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
