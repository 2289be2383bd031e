"""The GLR benchmark's figure: mean accuracy on the seen experiences after each experience, one line per
run (:func:`plot_average_accuracy`, from :func:`seen_accuracy`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..results import save_figure
from .settings import METHODS, RunResult, RunSpec


def seen_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Mean accuracy over the experiences seen so far, after each experience: ``mean_{j<=t} A[t, j]``."""
    a = np.asarray(matrix, dtype=np.float64)
    return np.array([a[t, : t + 1].mean() for t in range(len(a))])


#: One colour per method; the variants of a method (split, memory size) differ by line style and marker.
METHOD_COLOURS = {"naive": "#7f7f7f", "replay": "#ff7f0e", "latent": "#1f77b4", "glr": "#d62728",
                  "glr-otf": "#2ca02c"}
_VARIANT_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"))


def plot_average_accuracy(results: list[RunResult], path: Path, title: str = "", formats=None) -> list[Path]:
    """:func:`seen_accuracy` after each experience, mean over seeds, one line per run (colour = method).

    Written (atomically) to ``path``, or, with ``formats``, to ``path`` with each format as suffix;
    returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list] = {}
    specs: dict[str, RunSpec] = {}
    for r in results:
        curves.setdefault(r.spec.name, []).append(seen_accuracy(r.matrix))
        specs[r.spec.name] = r.spec
    fig, ax = plt.subplots(figsize=(6.4, 3.4), constrained_layout=True)
    variant: dict[str, int] = {}
    for name, cs in curves.items():
        spec = specs[name]
        k = variant[spec.method] = variant.get(spec.method, -1) + 1
        style, marker = _VARIANT_STYLES[k % len(_VARIANT_STYLES)]
        y = 100 * np.mean(cs, axis=0)
        ax.plot(range(1, len(y) + 1), y, color=METHOD_COLOURS[spec.method], linestyle=style, marker=marker,
                markersize=3, linewidth=1.2, label=_label(spec))
    ax.set_xlabel("experiences trained")
    ax.set_ylabel("mean accuracy on seen experiences (%)")
    ax.set_xticks(range(1, len(results[0].matrix) + 1))
    ax.grid(alpha=0.3)
    seeds = len({r.seed for r in results})
    if title or seeds > 1:
        ax.set_title(title + (f" (mean of {seeds} seeds)" if seeds > 1 else ""), fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    paths = [path] if formats is None else [path.parent / f"{path.name}.{f.strip()}" for f in formats if f.strip()]
    try:
        return save_figure(fig, paths, dpi=150)
    finally:
        plt.close(fig)


def _label(spec: RunSpec) -> str:
    words = METHODS[spec.method]
    if spec.freezes:
        words += f", split {spec.split}"
    if spec.uses_memory:
        words += f", M={spec.memory}"
    return words
