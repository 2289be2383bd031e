"""The ``latent-replay`` command line (click).

Errors in the user's input (a missing dataset piece, a malformed filelist, a bad argument) are printed
as one line ``Error: ...`` naming the file, line or argument, with exit code 1 (2 for usage errors).
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

import click

from .config import ConfigError, ExperimentConfig
from .data.core50 import DatasetError, load_frames, open_root
from .data.filelists import FILELISTS_DIR, SCENARIOS, FilelistError, default_filelists_root
from .utils import parse_int_list, setup_logging

log = logging.getLogger("latent_replay")

#: Exceptions that describe bad input; shown as one line without a traceback.
#: OSError: a folder that cannot be written (permissions, a file in the way, a full disk) is named by the
#: error itself ("[Errno 13] Permission denied: 'out/x'").
USER_ERRORS = (ConfigError, DatasetError, FilelistError, OSError, ValueError)


#: Subcommands defined in other modules: name -> (module, attribute). They are imported when used (or
#: listed by --help), so that ``latent-replay train`` does not load pandas and matplotlib for figures.
LAZY_COMMANDS = {
    "weights": (".models.commands", "weights"),
    "download": (".data.download_cli", "download"),
    "figures": (".figures", "figures_command"),
    "prepare": (".launch", "prepare_command"),
    "glr-bench": (".glr_bench", "glr_bench_command"),
    "sweep": (".sweep", "sweep_command"),
}


class OneLineUsageError(click.ClickException):
    """A usage error (unknown option, bad or missing value) as one ``Error:`` line, exit code 2."""

    exit_code = 2


def _one_line(exc: click.UsageError) -> click.ClickException:
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):   # a group without arguments: its help
        return exc
    return OneLineUsageError(exc.format_message())


class Group(click.Group):
    """A click group that turns the suite's input errors and click's usage errors (its own and its
    subcommands') into one-line messages, and loads the :data:`LAZY_COMMANDS` on first use."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attr = LAZY_COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module, __package__), attr), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from None


def _runs(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_int_list(value, name=f"--{param.name}")
    except ValueError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1]) from None


scenario_option = click.option("--scenario", "scenarios", type=click.Choice([str(s) for s in SCENARIOS]),
                               multiple=True, help="NICv2 scenario (repeatable; default: all three).")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.version_option(package_name="latent-replay")
def main(log_level):
    """latent-replay: continual learning on CORe50 NICv2 with latent replay."""
    setup_logging(log_level)


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--sessions", default=11, show_default=True, help="Sessions s1..sN (11 = all).")
@click.option("--categories", default=10, show_default=True, help="Categories (10 = all).")
@click.option("--objects-per-category", default=2, show_default=True, help="Objects per category (5 = all).")
@click.option("--frames", default=16, show_default=True, help="Frames per (session, object) video.")
@click.option("--size", default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--full", is_flag=True, help="Full CORe50 size: 11 sessions x 50 objects x 300 frames.")
@click.option("--workers", type=int, default=None, help="Parallel writers (default: up to 4).")
def synth(out_dir, sessions, categories, objects_per_category, frames, size, seed, full, workers):
    """Write a synthetic CORe50 (exact on-disk layout, learnable content) to OUT_DIR."""
    from .data.synthetic import write_synthetic_core50

    if full:
        sessions, categories, objects_per_category, frames = 11, 10, 5, 300
    info = write_synthetic_core50(out_dir, sessions=sessions, categories=categories,
                                  objects_per_category=objects_per_category, frames=frames, size=size,
                                  seed=seed, workers=workers)
    click.echo(f"synthetic CORe50: {info.n_images} images, sessions {len(info.sessions)}, "
               f"objects {len(info.objects)}, {info.frames} frames/video, {info.size}x{info.size} in {out_dir}")


@main.group()
def filelists():
    """Make, check and summarise NICv2 filelists."""


@filelists.command("make")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write NICv2_<S>/run<R>/ and the test lists into (default ROOT/batch_filelists, "
                   "which prepare, cache and filelists check then use by default).")
@scenario_option
@click.option("--runs", default="0-9", show_default=True, callback=_runs, help="Runs, e.g. 0-4 or 0,2.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed combined with the run number.")
@click.option("--force", is_flag=True, help="Replace existing scenario folders and test lists.")
def filelists_make(root, out, scenarios, runs, seed, force):
    """Build NICv2-79/196/391 filelists from the frames present under dataset ROOT."""
    from .data.nicv2 import inventory_from_root, write_nicv2

    ds = open_root(root)
    out = out if out is not None else ds.root / FILELISTS_DIR
    inventory = inventory_from_root(ds.images_dir)
    scenarios = [int(s) for s in scenarios] or list(SCENARIOS)
    write_nicv2(out, inventory, scenarios, runs, seed=seed, overwrite=force)
    click.echo(f"wrote NICv2-{'/'.join(map(str, scenarios))} runs {runs[0]}..{runs[-1]} "
               f"from {sum(len(v) for v in inventory.values())} frames to {out}")


@filelists.command("check")
@click.argument("filelists_dir", type=click.Path(path_type=Path), required=False)
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Dataset root: also check that every frame exists.")
@scenario_option
@click.option("--runs", default="0-4", show_default=True, callback=_runs)
@click.option("--full-test", is_flag=True, help="Check the full test list instead of the reduced one.")
def filelists_check(filelists_dir, root, scenarios, runs, full_test):
    """Validate every filelist of the given scenarios and runs (format, labels, frames).

    FILELISTS_DIR defaults to ROOT/batch_filelists if present, else the official lists shipped with the suite.
    """
    from .data.nicv2 import load_scenario

    images_dir = open_root(root).images_dir if root is not None else None
    filelists_dir = filelists_dir or default_filelists_root(root)
    for s in [int(s) for s in scenarios] or list(SCENARIOS):
        for r in runs:
            sc = load_scenario(filelists_dir, s, r, reduced_test=not full_test, images_dir=images_dir)
            overlaps = sc.overlaps()
            if overlaps:
                more = f" (and {len(overlaps) - 1} more)" if len(overlaps) > 1 else ""
                raise FilelistError(f"{filelists_dir}: {sc.name} run {r}: {overlaps[0]}{more}")
            click.echo(f"ok {sc.name} run {r}: {len(sc)} batches, {sc.train_frames} train frames, "
                       f"{len(sc.test)} test frames ({sc.source})")


@filelists.command("summary")
@click.argument("filelists_dir", type=click.Path(path_type=Path), required=False)
@click.option("--scenario", type=click.Choice([str(s) for s in SCENARIOS]), default="391", show_default=True)
@click.option("--run", default=0, show_default=True)
@click.option("--full-test", is_flag=True)
def filelists_summary(filelists_dir, scenario, run, full_test):
    """Print batches, frames and classes introduced per batch for one scenario run.

    FILELISTS_DIR defaults to the official lists shipped with the suite.
    """
    from .data.nicv2 import load_scenario
    from .demo import format_summary

    filelists_dir = filelists_dir or default_filelists_root()
    click.echo(format_summary(load_scenario(filelists_dir, int(scenario), run, reduced_test=not full_test)))


@main.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.argument("filelists_dir", type=click.Path(path_type=Path), required=False)
@scenario_option
@click.option("--runs", default="0-4", show_default=True, callback=_runs)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Default: $LATENT_REPLAY_CACHE, else $XDG_CACHE_HOME/latent-replay, else ~/.cache/latent-replay.")
@click.option("--workers", type=int, default=None)
def cache(root, filelists_dir, scenarios, runs, cache_dir, workers):
    """Decode every frame of the given scenarios once into the frame cache.

    FILELISTS_DIR defaults to ROOT/batch_filelists if present, else the official lists shipped with the suite.
    """
    from .data.nicv2 import load_scenario

    ds = open_root(root)
    filelists_dir = filelists_dir or default_filelists_root(root)
    paths: set[str] = set()
    for s in [int(s) for s in scenarios] or list(SCENARIOS):
        for r in runs:
            sc = load_scenario(filelists_dir, s, r, images_dir=ds.images_dir)
            for fl in (*sc.batches, sc.test):
                paths.update(fl.paths)
    store = load_frames(ds.images_dir, paths, cache_dir=cache_dir, workers=workers)
    state = "already cached" if store.from_cache else "decoded"
    click.echo(f"{len(store.paths)} frames {state} ({store.nbytes / 1e6:.1f} MB) in {store.cache_file}")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="exp_configuration.json (written by prepare_experiment.py or by hand).")
@click.option("--runs", default=None, callback=_runs, help="Override the config's runs, e.g. 0-4.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Override the device.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Override the results folder.")
@click.option("--force", is_flag=True, help="Train finished runs again (their results are replaced).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def train(config_path, runs, device, out, force, no_progress):
    """Train the runs of one experiment; resumes interrupted runs from their checkpoints."""
    from .train import Trainer

    cfg = ExperimentConfig.load(config_path)
    changes = {k: v for k, v in (("runs", runs), ("device", device), ("out", str(out) if out else None)) if v is not None}
    if changes:
        cfg = cfg.replace(**changes)
    trainer = Trainer(cfg, progress=not no_progress)
    summaries = trainer.run_all(force=force)
    for s in summaries:
        click.echo(f"run {s['run']}: final accuracy {s['final_accuracy']:.4f}, average {s['average_accuracy']:.4f}, "
                   f"{s['train_seconds']:.1f}s training, {s['eval_seconds']:.1f}s evaluation")
    click.echo(f"results in {trainer.experiment_dir}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_output"),
              show_default=True, help="Folder for the synthetic dataset, filelists, cache, results and figures.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def demo(out, seed):
    """The embedded default: synthetic CORe50 -> AR1*-free + latent replay vs naive -> table and figures."""
    from .demo import run_demo

    run_demo(out, seed, echo=click.echo)


if __name__ == "__main__":
    main()
