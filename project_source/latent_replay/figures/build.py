"""From result folders to figures and tables: :func:`build_figures` and :func:`make_figures`."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..data.filelists import atomic_write_text
from ..results import write_csv
from .experiments import load_experiments
from .plots import _fig_accuracy, _fig_cost_vs_layer, _fig_final_vs_layer, _fig_final_vs_memory, _fig_memory
from .reference import load_reference
from .style import RC
from .tables import summary_markdown, summary_table

log = logging.getLogger(__package__)   # "latent_replay.figures", as before the split


@dataclass
class Report:
    """What :func:`build_figures` did."""

    written: dict = field(default_factory=dict)   # figure name -> files
    skipped: dict = field(default_factory=dict)   # figure name -> reason
    notes: list = field(default_factory=list)     # left-out runs, invalid configs, ...
    experiments: list = field(default_factory=list)


def _check_formats(formats: Sequence[str]) -> list[str]:
    from matplotlib.figure import Figure

    supported = Figure().canvas.get_supported_filetypes()
    out = []
    for f in formats:
        f = f.strip().lower().lstrip(".")
        if not f:
            continue
        if f not in supported:
            raise ValueError(f"format {f!r} is not supported (choose from {', '.join(sorted(supported))})")
        if f not in out:
            out.append(f)
    if not out:
        raise ValueError("no image format given")
    return out


def build_figures(result_dirs: Iterable[str | Path], out: str | Path, formats: Sequence[str] = ("png",),
                  reference: str | Path | None = None, reference_strategies: Sequence[str] | None = None,
                  only: Sequence[str] | None = None) -> Report:
    """Discover, group, draw and tabulate; see :func:`make_figures`. ``only`` restricts the figures
    (names of :data:`FIGURES`; the summary is always written)."""
    import matplotlib

    result_dirs = list(result_dirs)
    formats = _check_formats(formats)
    ref = load_reference(reference, reference_strategies) if reference is not None else None
    report = Report()
    exps = load_experiments(result_dirs, report.notes)
    report.experiments = exps
    finished = [e for e in exps if e.finished]
    if not finished:
        log.warning("no experiment with a finished run under %s; nothing written",
                    ", ".join(map(str, result_dirs)))
        return report
    out = Path(out)
    log.info("%d experiment(s) with %d finished run(s); %d run(s) left out", len(finished),
             sum(len(e.runs) for e in finished), sum(len(e.left_out) for e in exps))
    makers: dict[str, Callable] = {
        "accuracy_vs_batches": lambda: _fig_accuracy(finished, out, formats, ref),
        "final_accuracy_vs_layer": lambda: _fig_final_vs_layer(finished, out, formats),
        "cost_vs_layer": lambda: _fig_cost_vs_layer(finished, out, formats),
        "memory_vs_layer": lambda: _fig_memory(finished, out, formats),
        "final_accuracy_vs_memory": lambda: _fig_final_vs_memory(finished, out, formats),
    }
    with matplotlib.rc_context(RC):
        for name, make in makers.items():
            if only is not None and name not in only:
                continue
            paths, why = make()
            if paths:
                report.written[name] = paths
                log.info("wrote %s: %s", name, ", ".join(str(p) for p in paths))
            else:
                report.skipped[name] = why
                log.info("skipped %s: %s", name, why)
    table = summary_table(finished)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "summary.csv", table)
    atomic_write_text(out / "summary.md", summary_markdown(table, report.notes, ref))
    report.written["summary"] = [out / "summary.csv", out / "summary.md"]
    log.info("wrote summary: %s, %s", out / "summary.csv", out / "summary.md")
    return report


def make_figures(result_dirs: Iterable[str | Path], out: str | Path, formats: Sequence[str] = ("png",),
                 reference: str | Path | None = None, **kw) -> dict[str, list[Path]]:
    """Write the paper's figures and the summary table for every experiment under ``result_dirs``.

    Returns figure name (keys of :data:`FIGURES`, plus ``summary``) -> files written; figures with
    nothing to show are skipped (logged) and absent. ``reference`` is a CORe50 multi-run TSV or a folder
    of them (e.g. :data:`REFERENCE_RESULTS`; the API draws none by default, the command line that one),
    drawn dashed on figure 1. Partial and unreadable runs are logged and left out; with no
    finished run at all nothing is written and ``{}`` is returned.
    """
    return build_figures(result_dirs, out, formats, reference, **kw).written
