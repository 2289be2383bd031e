"""The entry points: :func:`main` (``prepare_experiment.py``), :data:`prepare_command` (``latent-replay
prepare``), and :func:`write_plan`, which writes a plan's config and run script."""
from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import click

from ..config import LATENT_LAYERS
from ..results import set_aside_lines, set_aside_stale
from .args import PROG, UsageError, build_parser
from .plan import Plan, validate
from .script import FIRST_CHECK, describe, render_script, trainer_python


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
