"""Drawing the five figures (matplotlib, imported when drawing): one function per figure, each returning
the files written, or none and why the figure has nothing to show."""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import LATENT_LAYERS
from ..results import save_figure
from .reference import _reference_colour, _reference_title, reference_x
from .series import Series, accuracy_panels, layer_series, memory_footprint, memory_series
from .style import (COLUMN_WIDTH, FIGURES, LINE_MARKERS, MEMORY_MARKERS, PAGE_WIDTH, PANEL_HEIGHT, STORAGE_STYLE,
                    _constants_title, _shown)
from .tables import _bytes


# ====================================================================== drawing helpers
def _figure(ncols: int, nrows: int = 1, legend_rows: int = 0, height: float = PANEL_HEIGHT, **kw):
    from matplotlib.figure import Figure

    width = COLUMN_WIDTH if ncols == 1 else min(PAGE_WIDTH, COLUMN_WIDTH * ncols)
    total = height * nrows + 0.16 * legend_rows + (0.15 if legend_rows else 0)
    fig = Figure(figsize=(width, total), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _legend_columns(labels: Sequence[str], width: float) -> int:
    longest = max((len(s) for s in labels), default=10)
    return max(1, min(len(labels), int(width // (0.055 * longest + 0.45))))


def _legend_layout(labels: Sequence[str], ncols: int) -> tuple[int, int]:
    width = COLUMN_WIDTH if ncols == 1 else min(PAGE_WIDTH, COLUMN_WIDTH * ncols)
    cols = _legend_columns(labels, width)
    return cols, math.ceil(len(labels) / cols)


def _wrap_title(title: str | None, ncols: int) -> tuple[str | None, int]:
    """A legend title wrapped to the figure's width, and its number of lines."""
    if not title:
        return None, 0
    width = COLUMN_WIDTH if ncols == 1 else min(PAGE_WIDTH, COLUMN_WIDTH * ncols)
    lines = textwrap.wrap(title, max(20, int(width / 0.06)))
    return "\n".join(lines), len(lines)


def _add_legend(fig, handles, labels, ncol: int, title: str | None = None):
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, title=title,
                   handlelength=2.2, columnspacing=1.2)


@dataclass
class _Legend:
    """A figure's legend: its labels in order, columns, rows (the wrapped title's lines included), title."""

    labels: list
    ncol: int
    rows: int
    title: str | None


def _legend(labels: Sequence[str], ncols: int, title: str | None) -> _Legend:
    cols, nrows = _legend_layout(labels, ncols)
    title, tlines = _wrap_title(title, ncols)
    return _Legend(list(labels), cols, nrows + tlines, title)


def _series_labels(panels: dict) -> list[str]:
    """The labels of :func:`layer_series` / :func:`memory_series` panels, in order, each once."""
    return list(dict.fromkeys(s.label for ser, base in panels.values() for s in ser + base))


def _series_experiments(panels: dict) -> list:
    """The experiments drawn in :func:`layer_series` / :func:`memory_series` panels."""
    return [p[3] for ser, base in panels.values() for s in ser + base for p in s.points.values()]


def _finish(fig, legend: _Legend, handles: dict, out: Path, name: str, formats: Sequence[str]):
    """The legend (the labels drawn, in the legend's order) and the figure's files: a figure maker's result."""
    order = [lb for lb in legend.labels if lb in handles]
    _add_legend(fig, [handles[lb] for lb in order], order, legend.ncol, legend.title)
    return _save(fig, out, FIGURES[name], formats), None


def _save(fig, out: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    return save_figure(fig, [out / f"{stem}.{fmt}" for fmt in formats], bbox_inches="tight", pad_inches=0.03)


def _layer_ticks(ax, layers: Sequence[str]) -> None:
    """Layer names as x ticks: 45 degrees, or vertical when the ticks are closer than 0.3 inch."""
    width = ax.get_position().width * ax.get_figure().get_figwidth()
    vertical = width / max(len(layers), 1) < 0.3
    ax.set_xticks(range(len(layers)))
    if vertical:
        ax.set_xticklabels(layers, rotation=90, ha="center")
    else:
        ax.set_xticklabels(layers, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.grid(axis="x", visible=False)


def _baseline(ax, b: Series, handles: dict, style: str = ":") -> None:
    """A no-replay result as a horizontal line (mean) with a light ±std band."""
    mean, std, _, _ = b.points[None]
    if not np.isfinite(mean):
        return
    h = ax.axhline(mean, color=b.colour, ls=style, lw=1.1)
    if std > 0:
        ax.axhspan(mean - std, mean + std, color=b.colour, alpha=0.08, lw=0)
    handles.setdefault(b.label, h)


# ====================================================================== the figures
def _fig_accuracy(exps, out, formats, reference) -> tuple[list[Path], str | None]:
    panels = accuracy_panels(exps)
    if not panels:
        return [], "no finished run"
    scenarios = list(panels)
    handles: dict[str, object] = {}
    labels = [ln.label for lines in panels.values() for ln in lines]
    ref_labels = []
    if reference:
        ref_labels = [f"published {_reference_title(s)}, no replay (NICv2 paper)"
                      for sc in scenarios for s in reference.get(sc, {})]
    finished = [e for e in exps if e.finished]
    legend = _legend(list(dict.fromkeys(labels + ref_labels)), len(scenarios),
                     _constants_title(finished, _shown(finished)))
    fig, axes = _figure(len(scenarios), legend_rows=legend.rows, sharey=True)
    # with many lines, sparse markers (one per line style, staggered) tell the shades apart
    marked = max(len(lines) for lines in panels.values()) >= 4
    marker_of = {lb: LINE_MARKERS[i % len(LINE_MARKERS)] for i, lb in enumerate(dict.fromkeys(labels))}
    for ax, scenario in zip(axes[0], scenarios):
        xmax = 0
        n_lines = len(panels[scenario])
        for i, ln in enumerate(panels[scenario]):
            c = ln.curve
            if c.empty:
                continue
            style = dict(marker="o", ms=2.5) if len(c) <= 20 else {}  # short demo curves: show the points
            if marked and len(c) > 2:
                step = max(1, len(c) // 6)
                style = dict(marker=marker_of[ln.label], ms=3.5, markevery=(int(i * step / n_lines) % step, step))
            h, = ax.plot(c["x"], c["mean"], color=ln.colour, lw=1.2, zorder=3, **style)
            if (c["runs"] > 1).any():
                ax.fill_between(c["x"], c["mean"] - c["std"], c["mean"] + c["std"], color=ln.colour, alpha=0.2,
                                lw=0, zorder=2)
            handles.setdefault(ln.label, h)
            xmax = max(xmax, int(c["x"].max()))
        for i, (strat, arr) in enumerate((reference or {}).get(scenario, {}).items()):
            x = reference_x(arr.shape[1], scenario)
            mean, std = arr.mean(0), arr.std(0, ddof=0)
            keep = x <= max(xmax, 1) if xmax < scenario else np.ones(len(x), bool)
            colour = _reference_colour(strat, i)
            h, = ax.plot(x[keep], mean[keep], ls="--", lw=1.0, color=colour, zorder=1.5)
            ax.fill_between(x[keep], (mean - std)[keep], (mean + std)[keep], color=colour, alpha=0.08, lw=0, zorder=1)
            handles.setdefault(f"published {_reference_title(strat)}, no replay (NICv2 paper)", h)
        ax.set_title(f"NICv2-{scenario}")
        ax.set_xlabel("encountered batches")
        ax.set_xlim(0, max(xmax, 1))
        if ax is axes[0][0]:
            ax.set_ylabel("test accuracy (%)")
    axes[0][0].set_ylim(bottom=0)   # shared y: set once every panel is drawn, or the top clips later panels
    return _finish(fig, legend, handles, out, "accuracy_vs_batches", formats)


def _draw_series_over_layers(ax, series, baselines, layers, handles) -> None:
    # series sharing a layer are dodged sideways so their markers and error bars do not overlap
    at = {x: [s for s in series if x in s.points] for x in layers}
    for s in series:
        f = s.frame(layers)
        xs = []
        for x in f["x"]:
            n, rank = len(at[x]), at[x].index(s)
            xs.append(layers.index(x) + (rank - (n - 1) / 2) * min(0.12, 0.6 / n))
        h = ax.errorbar(xs, f["mean"], yerr=f["std"], color=s.colour, marker=s.marker, fillstyle=s.fill,
                        ms=7 if s.marker == "*" else 4, ls="-" if len(xs) > 1 else "none", capsize=2, lw=1.2,
                        elinewidth=0.8, zorder=3)
        handles.setdefault(s.label, h)
    for b in baselines:
        _baseline(ax, b, handles)


def _fig_final_vs_layer(exps, out, formats) -> tuple[list[Path], str | None]:
    panels = layer_series(exps, "final_accuracy")
    if not panels:
        return [], "replay was run at fewer than two layers in every scenario"
    legend = _legend(_series_labels(panels), len(panels),
                     _constants_title(_series_experiments(panels), _shown(exps), memory=True))
    fig, axes = _figure(len(panels), legend_rows=legend.rows, sharey=True, height=PANEL_HEIGHT + 0.3)
    handles: dict[str, object] = {}
    for ax, (scenario, (series, baselines)) in zip(axes[0], panels.items()):
        layers = [l for l in LATENT_LAYERS if any(l in s.points for s in series)]
        _draw_series_over_layers(ax, series, baselines, layers, handles)
        _layer_ticks(ax, layers)
        ax.set_title(f"NICv2-{scenario}")
        ax.set_xlabel("replay layer (network order)")
        if ax is axes[0][0]:
            ax.set_ylabel("final test accuracy (%)")
    return _finish(fig, legend, handles, out, "final_accuracy_vs_layer", formats)


def _fig_cost_vs_layer(exps, out, formats) -> tuple[list[Path], str | None]:
    from ..models import mac_fraction_below

    panels = layer_series(exps, "seconds_per_batch")
    if not panels:
        return [], "replay was run at fewer than two layers in every scenario"
    title = "; ".join(filter(None, ["time per incremental batch (batch 0 left out), mean\u00a0±\u00a0std over runs",
                                    _constants_title(_series_experiments(panels), _shown(exps, device=True),
                                                     device=True)]))
    legend = _legend(_series_labels(panels), len(panels), title)
    fig, axes = _figure(len(panels), nrows=2, legend_rows=legend.rows, sharex="col",
                        height_ratios=[1.6, 1.0], height=(PANEL_HEIGHT + 0.9) / 2)
    handles: dict[str, object] = {}
    for col, (scenario, (series, baselines)) in enumerate(panels.items()):
        top, bottom = axes[0][col], axes[1][col]
        layers = [l for l in LATENT_LAYERS if any(l in s.points for s in series)]
        _draw_series_over_layers(top, series, baselines, layers, handles)
        top.set_title(f"NICv2-{scenario}")
        top.set_ylim(bottom=0)
        top.grid(axis="x", visible=False)
        fractions = [100.0 * mac_fraction_below(l) for l in layers]
        bottom.bar(range(len(layers)), fractions, color="#9e9e9e", width=0.6, zorder=2)
        if len(layers) <= 8:
            for i, v in enumerate(fractions):
                bottom.text(i, v + 3, f"{v:.0f}", ha="center", va="bottom", fontsize=6)
        bottom.set_ylim(0, 118)
        bottom.set_yticks([0, 50, 100])
        _layer_ticks(bottom, layers)
        bottom.set_xlabel("replay layer (network order)")
        if col == 0:
            top.set_ylabel("training time\nper batch (s)")
            bottom.set_ylabel("forward MACs\nbelow (%)")
    fig.align_ylabels(axes[:, 0])
    return _finish(fig, legend, handles, out, "cost_vs_layer", formats)


def _fig_memory(exps, out, formats) -> tuple[list[Path], str | None]:
    from matplotlib.ticker import FuncFormatter, LogLocator

    df = memory_footprint(exps)
    if len(df.drop_duplicates(["layer", "storage"])) < 2:
        return [], "fewer than two (replay layer, storage dtype) combinations"
    layers = [l for l in LATENT_LAYERS if l in set(df["layer"])]
    memories = sorted(df["memory"].unique())
    labels = []
    for (storage, memory), _ in df.groupby(["storage", "memory"], sort=False):
        labels.append(STORAGE_STYLE.get(storage, ("", storage))[1] + (f", M={memory}" if len(memories) > 1 else ""))
    ref_labels = [f"raw images (uint8 128x128 RGB){f', M={m}' if len(memories) > 1 else ''}" for m in memories]
    legend = _legend(labels + ref_labels, 1,
                     f"replay memory M = {memories[0]} patterns" if len(memories) == 1 else None)
    fig, axes = _figure(1, legend_rows=legend.rows, height=PANEL_HEIGHT + 0.3)
    ax = axes[0][0]
    handles, names = [], []
    for (storage, memory), g in df.groupby(["storage", "memory"], sort=False):
        colour, words = STORAGE_STYLE.get(storage, ("#444444", storage))
        marker = "*" if storage == "images" else MEMORY_MARKERS[memories.index(memory) % len(MEMORY_MARKERS)]
        xs = [layers.index(l) for l in g["layer"]]
        h, = ax.plot(xs, g["bytes"], marker=marker, ms=7 if marker == "*" else 4, color=colour,
                     ls="-" if len(xs) > 1 else "none", zorder=3)
        handles.append(h)
        names.append(words + (f", M={memory}" if len(memories) > 1 else ""))
    for i, m in enumerate(memories):
        raw = df.loc[df["memory"] == m, "raw_image_bytes"].max()
        h = ax.axhline(raw, color="#555555", ls=("--", "-.", ":")[i % 3], lw=1.0, zorder=1)
        handles.append(h)
        names.append(ref_labels[i])
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _bytes(v)))
    lo, hi = min(df["bytes"].min(), df["raw_image_bytes"].min()), max(df["bytes"].max(), df["raw_image_bytes"].max())
    ax.set_ylim(lo / 3, hi * 3)
    _layer_ticks(ax, layers)
    ax.set_xlabel("replay layer (network order)")
    ax.set_ylabel("replay memory (bytes, log scale)")
    _add_legend(fig, handles, names, legend.ncol, legend.title)
    return _save(fig, out, FIGURES["memory_vs_layer"], formats), None


def _fig_final_vs_memory(exps, out, formats) -> tuple[list[Path], str | None]:
    panels = memory_series(exps, "final_accuracy")
    if not panels:
        return [], "no configuration was run with two or more memory sizes"
    legend = _legend(_series_labels(panels), len(panels),
                     _constants_title(_series_experiments(panels), _shown(exps), memory=False))
    fig, axes = _figure(len(panels), legend_rows=legend.rows, sharey=True)
    handles: dict[str, object] = {}
    for ax, (scenario, (series, baselines)) in zip(axes[0], panels.items()):
        sizes = sorted({x for s in series for x in s.points})
        for s in series:
            f = s.frame()
            h = ax.errorbar(f["x"], f["mean"], yerr=f["std"], color=s.colour, marker="o", fillstyle=s.fill,
                            capsize=2, elinewidth=0.8,
                            ls="-" if len(f) > 1 else "none", zorder=3)
            handles.setdefault(s.label, h)
        for b in baselines:
            _baseline(ax, b, handles)
        if sizes[-1] / max(sizes[0], 1) >= 8:
            ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes], rotation=45 if len(sizes) > 4 else 0,
                           ha="right" if len(sizes) > 4 else "center")
        ax.minorticks_off()
        ax.set_title(f"NICv2-{scenario}")
        ax.set_xlabel("replay memory size M (patterns)")
        if ax is axes[0][0]:
            ax.set_ylabel("final test accuracy (%)")
    return _finish(fig, legend, handles, out, "final_accuracy_vs_memory", formats)
