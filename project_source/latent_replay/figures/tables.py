"""The summary table of the experiments (``summary.csv``) and its markdown (``summary.md``)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .experiments import Experiment, load_experiments
from .reference import _reference_title
from .style import _label, _shown


SUMMARY_COLUMNS = (
    "experiment", "label", "scenario", "method", "replay", "latent_layer", "replay_memory", "storage", "profile",
    "runs", "runs_left_out", "batches", "final_acc_pct_mean", "final_acc_pct_std", "avg_acc_pct_mean",
    "avg_acc_pct_std", "train_s_per_run", "train_s_total", "eval_s_per_run", "eval_s_total", "train_s_per_batch",
    "memory_bytes", "path",
)


def summary_table(experiments: Iterable[Experiment | str | Path]) -> pd.DataFrame:
    """One row per experiment with a finished run (columns :data:`SUMMARY_COLUMNS`).

    Accuracies in percent, mean and population std over the finished runs; ``train_s_per_run`` /
    ``eval_s_per_run`` the mean total seconds of one run, ``*_total`` the sum over runs;
    ``train_s_per_batch`` the mean seconds per incremental batch; ``memory_bytes`` the mean final replay
    memory. ``experiments`` may also be result folders (loaded with :func:`load_experiments`).
    """
    items = list(experiments)
    paths = [p for p in items if not isinstance(p, Experiment)]
    exps = [e for e in items if isinstance(e, Experiment)] + (load_experiments(paths) if paths else [])
    exps = sorted((e for e in exps if e.finished), key=Experiment.sort_key)
    show = _shown(exps)
    rows = []
    for e in exps:
        fin, avg = e.values("final_accuracy"), e.values("average_accuracy")
        tr, ev = e.values("train_seconds"), e.values("eval_seconds")
        rows.append({
            "experiment": e.name, "label": _label(e, show | {"memory", "dtype"}), "scenario": e.scenario,
            "method": e.method, "replay": e.replay, "latent_layer": e.layer or "", "replay_memory": e.memory,
            "storage": e.storage or "", "profile": e.profile, "runs": len(e.runs),
            "runs_left_out": len(e.left_out), "batches": int(max(r.batches for r in e.runs)),
            "final_acc_pct_mean": fin.mean(), "final_acc_pct_std": fin.std(ddof=0),
            "avg_acc_pct_mean": avg.mean(), "avg_acc_pct_std": avg.std(ddof=0),
            "train_s_per_run": tr.mean(), "train_s_total": tr.sum(), "eval_s_per_run": ev.mean(),
            "eval_s_total": ev.sum(), "train_s_per_batch": e.values("seconds_per_batch").mean(),
            "memory_bytes": e.values("memory_bytes").mean(), "path": str(e.path),
        })
    df = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    df["replay_memory"] = df["replay_memory"].astype("Int64")
    df["memory_bytes"] = df["memory_bytes"].astype(float).round().astype("Int64")
    return df


def _seconds(s: float) -> str:
    if not np.isfinite(s):
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _bytes(b: float) -> str:
    if not np.isfinite(b) or b <= 0:
        return "-"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= f:
            return f"{b / f:.3g} {unit}"
    return f"{b:.0f} B"


def summary_markdown(table: pd.DataFrame, notes: Sequence[str] = (), reference: dict | None = None) -> str:
    lines = ["# Results summary", "",
             "Accuracy in % on the test set, mean ± population std over the finished runs; average accuracy "
             "= mean over the evaluations after each batch. Times are the total per run (mean) and over all "
             "runs; train s / batch = mean over the incremental batches (batch 0 left out); memory = final "
             "replay memory (MB = 10^6 bytes).", ""]
    head = ["Scenario", "Experiment", "Runs", "Final acc. (%)", "Avg. acc. (%)", "Train time / run",
            "Eval time / run", "Train time (all runs)", "Train s / batch", "Memory"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in table.itertuples(index=False):
        lines.append("| " + " | ".join([
            f"NICv2-{r.scenario}", f"{r.label} (`{r.experiment}`)",
            f"{r.runs}" + (f" (+{r.runs_left_out} left out)" if r.runs_left_out else ""),
            f"{r.final_acc_pct_mean:.2f} ± {r.final_acc_pct_std:.2f}", f"{r.avg_acc_pct_mean:.2f} ± {r.avg_acc_pct_std:.2f}",
            _seconds(r.train_s_per_run), _seconds(r.eval_s_per_run), _seconds(r.train_s_total),
            f"{r.train_s_per_batch:.3g}" if np.isfinite(r.train_s_per_batch) else "-",
            _bytes(float(r.memory_bytes)) if not pd.isna(r.memory_bytes) else "-",
        ]) + " |")
    if reference:
        scenarios = sorted(set(table["scenario"]) & set(reference))
        if scenarios:
            lines += ["", "## Published rehearsal-free results (reference curves)", "",
                      "Final accuracy (%), mean ± population std over the published runs.", "",
                      "| Scenario | Strategy | Runs | Final acc. (%) |", "|---|---|---:|---:|"]
            for s in scenarios:
                for strat, arr in reference[s].items():
                    lines.append(f"| NICv2-{s} | {_reference_title(strat)} | {arr.shape[0]} | "
                                 f"{arr[:, -1].mean():.2f} ± {arr[:, -1].std(ddof=0):.2f} |")
    if notes:
        lines += ["", "## Left out and missing", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
