"""``latent-replay sweep``: the click commands (``run``, the default, ``status`` and ``resubmit``)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from .run import resubmit, run_sweep
from .schema import CONTAINERS, LAUNCHERS
from .status import collect_status, format_status


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
