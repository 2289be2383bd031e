"""The GLR benchmark's result files and tables: the per-run and aggregated frames, :func:`write_results`
and :func:`load_results` (every file written atomically with :mod:`latent_replay.results`),
:func:`format_table` (the printed table) and :func:`bench_figures` (for ``latent-replay figures``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics import accuracy_matrix_frame
from ..results import write_csv, write_json
from .plots import plot_average_accuracy
from .settings import METHODS, TOOL_NAME, RunResult, RunSpec

METRICS = ("final_average_accuracy", "average_forgetting", "backward_transfer")


def results_frame(results: list[RunResult]) -> pd.DataFrame:
    """One row per run and seed."""
    return pd.DataFrame([r.row() for r in results])


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run (in the order of ``frame``): the number of seeds, mean and population std (ddof 0, as
    :func:`latent_replay.results.aggregate_runs`) of every metric, mean bytes and seconds."""
    g = frame.groupby("run", sort=False)
    out = g[["method", "split", "memory_slots"]].first()
    out.insert(0, "seeds", g.size())
    out["memory_bytes"] = g["memory_bytes"].mean()
    for m in METRICS:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=0)
    for c in ("train_seconds", "update_seconds", "eval_seconds"):
        out[c] = g[c].mean()
    return out.reset_index()


def matrices_frame(results: list[RunResult]) -> pd.DataFrame:
    """Every accuracy matrix, tidy: run, seed, train_exp, eval_exp, accuracy."""
    frames = []
    for r in results:
        f = accuracy_matrix_frame(r.matrix)
        f.insert(0, "seed", r.seed)
        f.insert(0, "run", r.spec.name)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def write_results(folder: str | Path, results: list[RunResult], config: dict | None = None, *,
                  plot: bool = False, title: str = "") -> pd.DataFrame:
    """Write under ``folder`` (atomically): ``summary.csv`` (a row per run and seed),
    ``summary_mean.csv`` (:func:`aggregate`), ``accuracy_matrix.csv``, ``runs/<run>_seed<S>.json``, and
    ``config.json`` and ``average_accuracy.png`` when asked; returns the aggregated frame."""
    folder = Path(folder)
    frame = results_frame(results)
    mean = aggregate(frame)
    if config is not None:
        write_json(folder / "config.json", config)
    written = set()
    for r in results:
        name = f"{r.spec.name}_seed{r.seed}.json"
        written.add(name)
        write_json(folder / "runs" / name, r.record())
    for stale in (folder / "runs").glob("*.json"):   # an earlier call's runs in the same folder
        if stale.name not in written:
            stale.unlink()
    write_csv(folder / "accuracy_matrix.csv", matrices_frame(results))
    write_csv(folder / "summary.csv", frame)
    write_csv(folder / "summary_mean.csv", mean)
    if plot:
        plot_average_accuracy(results, folder / "average_accuracy.png", title)
    else:
        (folder / "average_accuracy.png").unlink(missing_ok=True)   # an earlier call's plot
    return mean


def load_results(folder: str | Path) -> list[RunResult]:
    """The runs :func:`write_results` wrote under ``folder`` (``runs/*.json``), in file-name order."""
    results = []
    for f in sorted(Path(folder, "runs").glob("*.json")):
        rec = json.loads(f.read_text())
        results.append(RunResult(spec=RunSpec(**rec["spec"]), matrix=np.asarray(rec["accuracy_matrix"], dtype=float),
                                 seed=int(rec["seed"]), memory_bytes=list(rec.get("memory_bytes_after_update", [])),
                                 memory_patterns=int(rec.get("memory_patterns", 0)),
                                 train_seconds=float(rec.get("train_seconds", 0.0)),
                                 update_seconds=float(rec.get("update_seconds", 0.0)),
                                 eval_seconds=float(rec.get("eval_seconds", 0.0)), glr=rec.get("glr")))
    return results


def find_bench_folders(roots) -> list[Path]:
    """Folders under ``roots`` that hold a glr-bench comparison or sweep (``config.json`` by this tool)."""
    found = []
    for root in roots:
        for cfg in sorted(Path(root).rglob("config.json")):
            try:
                tool = json.loads(cfg.read_text()).get("tool")
            except (OSError, ValueError, AttributeError):
                continue
            if tool == TOOL_NAME and (cfg.parent / "runs").is_dir():
                found.append(cfg.parent)
    return found


def bench_figures(roots, out: str | Path, formats=("png",)) -> dict[str, list[Path]]:
    """For ``latent-replay figures``: the average-accuracy plot of every glr-bench folder under ``roots``,
    as ``<out>/glr_<folder>.<format>``; returns {figure name: files}."""
    written: dict[str, list[Path]] = {}
    for folder in find_bench_folders(roots):
        results = load_results(folder)
        if not results:
            continue
        name = f"glr_{folder.name}"
        written[name] = plot_average_accuracy(results, Path(out) / name, folder.name, formats=formats)
    return written


def _bytes(n: float) -> str:
    if n <= 0:
        return "0"
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_table(mean: pd.DataFrame) -> str:
    """The aggregated summary (:func:`aggregate`) as a plain text table, accuracies in percent
    (``mean ± std`` over seeds when there are several)."""
    def pct(metric):
        m, sd = 100 * mean[f"{metric}_mean"], 100 * mean[f"{metric}_std"]
        if (mean["seeds"] > 1).any():
            return [f"{a:.1f} ± {b:.1f}" for a, b in zip(m, sd)]
        return [f"{a:.1f}" for a in m]

    t = pd.DataFrame({
        "method": [METHODS[m] for m in mean["method"]],
        "split": [("-" if pd.isna(v) else str(int(v))) for v in mean["split"]],
        "memory": [int(v) if v else "-" for v in mean["memory_slots"]],
        "bytes kept": [_bytes(v) for v in mean["memory_bytes"]],
        "final acc %": pct("final_average_accuracy"),
        "forgetting %": pct("average_forgetting"),
        "BWT %": pct("backward_transfer"),
        "train s": mean["train_seconds"].round(1),
        "fit s": mean["update_seconds"].round(2),
    })
    return t.to_string(index=False)
