"""``latent-replay figures``: the command line of :func:`~latent_replay.figures.build_figures` (and of the
glr-bench folders' plots, :func:`latent_replay.glr_bench.bench_figures`)."""
from __future__ import annotations

from pathlib import Path

import click

from .build import build_figures
from .reference import REFERENCE_RESULTS


@click.command("figures")
@click.argument("result_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("figures"),
              show_default=True, help="Folder to write the figures and summary.csv / summary.md into.")
@click.option("--format", "formats", default="png,pdf", show_default=True,
              help="Comma-separated image formats (any matplotlib format: png, pdf, svg, ...).")
@click.option("--reference", type=click.Path(exists=True, path_type=Path), default=None,
              help="Published curves to overlay on figure 1 (NICv2 scenarios present in the results only): a CORe50 "
                   "results_<S>_multirun.tsv or a folder of them. Default: the rehearsal-free NICv2 curves shipped "
                   "with the package (AR1*, CWR*, LwF, naive, EWC, AR1*_BN; 10 runs each).")
@click.option("--no-reference", is_flag=True, help="Overlay no published curves.")
@click.option("--reference-strategies", default=None,
              help="Comma-separated published strategies to overlay (e.g. 'AR1*,CWR*'; default: all in the files).")
def figures_command(result_dirs, out, formats, reference, no_reference, reference_strategies):
    """Paper figures and tables from the experiments under RESULT_DIR... (found from their configs).

    Writes fig1 (accuracy vs encountered batches), fig2 (final accuracy vs replay layer), fig3 (training
    time and frozen MACs vs layer), fig4 (memory footprint vs layer and dtype), fig5 (final accuracy vs
    memory size) and summary.csv / summary.md into --out; figures with nothing to show are skipped.
    fig1 and summary.md also show the published rehearsal-free NICv2 curves (shipped; --no-reference: none).
    Folders written by `latent-replay glr-bench` get their average-accuracy plot (glr_<folder>).
    """
    from ..glr_bench import bench_figures

    if no_reference and (reference is not None or reference_strategies):
        raise click.UsageError("--no-reference cannot be combined with --reference or --reference-strategies")
    reference = None if no_reference else reference or REFERENCE_RESULTS
    strategies = [s for s in reference_strategies.split(",") if s.strip()] if reference_strategies else None
    try:
        report = build_figures(result_dirs, out, formats.split(","), reference, strategies)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    glr = bench_figures(result_dirs, out, formats.split(","))   # `latent-replay glr-bench` folders
    for name, paths in glr.items():
        click.echo(f"wrote {name}: {', '.join(str(p) for p in paths)}")
    if glr and not report.written:
        return
    if not report.written:
        found = len(report.experiments)
        raise click.ClickException(
            f"no experiment with a finished run under {', '.join(map(str, result_dirs))} "
            f"({found} experiment folder(s) found, {sum(len(e.left_out) for e in report.experiments)} partial run(s))")
    for name, paths in report.written.items():
        click.echo(f"wrote {name}: {', '.join(str(p) for p in paths)}")
    for name, why in report.skipped.items():
        click.echo(f"skipped {name}: {why}")
    if report.notes:
        click.echo(f"{len(report.notes)} note(s) on left-out or missing runs (see {out / 'summary.md'}):")
        for n in report.notes:
            click.echo(f"  {n}")
