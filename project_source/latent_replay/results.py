"""Result files: per-run metrics and summaries, per-experiment aggregates, and discovery.

Layout (every file written atomically)::

    <out>/<experiment>/exp_configuration.json     the config the runs were trained with
    <out>/<experiment>/run<R>/metrics.csv          one row per evaluation
    <out>/<experiment>/run<R>/summary.json         written when the run finishes
    <out>/<experiment>/run<R>/checkpoint.pt        state after the last finished batch (resume)
    <out>/<experiment>/summary.csv                 mean and std over finished runs, per evaluation

``metrics.csv`` columns: :data:`METRIC_COLUMNS`. ``kind`` is ``batch`` for the evaluation after a
batch and ``iteration_1`` for the original's extra evaluation after the first iteration (B7).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from .config import ConfigError, ExperimentConfig
from .data.filelists import atomic_write_text

METRIC_COLUMNS = (
    "batch", "kind", "iteration", "test_accuracy", "train_loss", "train_accuracy", "train_seconds",
    "eval_seconds", "new_frames", "classes_seen", "memory_patterns", "memory_bytes",
)
CONFIG_FILE = "exp_configuration.json"
#: Floats in every CSV written here (pandas' ``float_format``).
FLOAT_FORMAT = "%.6g"

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


#: A run folder's name: ``run<R>`` (anything else beside them, e.g. ``run0.bak``, is not a run).
RUN_DIR = re.compile(r"^run(\d+)$")


def run_dir(out: str | os.PathLike, experiment: str, run: int) -> Path:
    return Path(out) / experiment / f"run{run}"


def run_dirs(experiment_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(run number, folder)`` of the run folders of an experiment, by run number."""
    found = []
    for d in Path(experiment_dir).iterdir():
        match = RUN_DIR.match(d.name)
        if match and d.is_dir():
            found.append((int(match.group(1)), d))
    return sorted(found)


def read_summary(run_folder: str | os.PathLike) -> dict | None:
    """A run folder's ``summary.json`` (written when the run finished), or None when absent or unreadable."""
    try:
        summary = json.loads((Path(run_folder) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def trained_otherwise(summary: dict, cfg: ExperimentConfig, preprocessing_now: str | None = None) -> list[str]:
    """What a finished run (its summary.json) trained differently from ``cfg``
    (:meth:`~latent_replay.config.ExperimentConfig.trained_otherwise`: its configuration, the fidelity
    switches in force and the preprocessing used, as far as the summary records them); empty when the
    same, or for a summary from before summaries recorded their configuration."""
    recorded = summary.get("config")
    if not isinstance(recorded, dict):
        return []
    return cfg.trained_otherwise(recorded, summary.get("fidelity"), summary.get("preprocessing"), preprocessing_now)


def set_aside(run_folder: str | os.PathLike) -> Path:
    """Rename a run folder to ``run<R>.former`` (``.former2``, ... when taken), where no reader of results
    counts it (:data:`RUN_DIR`); returns the new path."""
    run_folder = Path(run_folder)
    n = 1
    while True:
        target = run_folder.with_name(f"{run_folder.name}.former{n if n > 1 else ''}")
        if not target.exists() and not target.is_symlink():
            break
        n += 1
    os.rename(run_folder, target)
    return target


def stale_runs(experiment_dir: str | os.PathLike, cfg: ExperimentConfig, runs: Iterable[int] | None = None,
               preprocessing_now: str | None = None) -> list[tuple[Path, list[str]]]:
    """``(folder, changed keys)`` of the experiment's finished runs (of ``runs``, default all) that
    trained otherwise than ``cfg`` (:func:`trained_otherwise`)."""
    found = []
    wanted = None if runs is None else set(runs)
    for number, d in run_dirs(experiment_dir) if Path(experiment_dir).is_dir() else []:
        summary = read_summary(d) if wanted is None or number in wanted else None
        changed = trained_otherwise(summary, cfg, preprocessing_now) if summary is not None else []
        if changed:
            found.append((d, changed))
    return found


def set_aside_stale(experiment_dir: str | os.PathLike, cfg: ExperimentConfig,
                    runs: Iterable[int] | None = None) -> list[tuple[Path, Path, list[str]]]:
    """Before ``cfg`` replaces an experiment's configuration (or its runs are trained again): rename
    each finished run (of ``runs``, default all) trained otherwise (:func:`stale_runs`) to
    ``run<R>.former*`` (:func:`set_aside`), so its results are neither labelled with ``cfg`` nor
    counted as done, and nothing is deleted. Returns ``(folder, new folder, changed keys)`` for each.
    Unfinished runs stay: a process may still be training them, and their checkpoint is refused when
    resumed under ``cfg``."""
    return [(d, set_aside(d), changed) for d, changed in stale_runs(experiment_dir, cfg, runs)]


def set_aside_lines(moved: Iterable[tuple[Path, Path, list[str]]], display=str) -> list[str]:
    """A line for each run folder :func:`set_aside_stale` moved (``display`` shows a path)."""
    return [f"{display(folder)} was trained with another configuration (changed: {', '.join(changed)}): set aside "
            f"as {target.name}" for folder, target, changed in moved]


def check_writable(folder: str | os.PathLike) -> None:
    """Make ``folder`` and write (and remove) a file in it: an ``OSError`` naming it when it cannot be
    written, before any long work whose results would go there."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-check-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format=FLOAT_FORMAT)
    atomic_write_text(path, buf.getvalue())


def write_json(path: str | os.PathLike, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _cell(value):
    """One metrics.csv cell as :func:`write_csv` would write it: floats with FLOAT_FORMAT, missing empty.
    (Byte-equal for the trainer's rows, whose columns each hold one type; pandas would write an integer
    column with a missing value as floats.)"""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return FLOAT_FORMAT % value
    return value


def write_metrics(path: str | os.PathLike, rows: list[dict]) -> None:
    """metrics.csv (:data:`METRIC_COLUMNS`) with the csv module: the trainer's process, which writes it
    after every batch, does not import pandas (38 MB resident and a second of start-up here)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(METRIC_COLUMNS)
    out.writerows([_cell(row.get(c)) for c in METRIC_COLUMNS] for row in rows)
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(path)


def aggregate_runs(experiment_dir: str | os.PathLike) -> pd.DataFrame | None:
    """Mean and std (over the finished runs) of every metric, per evaluation point; writes summary.csv (or
    removes it when no run is finished). A run trained with another configuration than the experiment's
    (``exp_configuration.json``) is left out, with a warning."""
    import pandas as pd

    experiment_dir = Path(experiment_dir)
    try:
        cfg = ExperimentConfig.load(experiment_dir / CONFIG_FILE)
    except ConfigError:
        cfg = None
    frames = []
    for number, d in run_dirs(experiment_dir):
        summary = read_summary(d)
        if summary is None and (d / "summary.json").exists():
            log.warning("%s: left out of summary.csv: its summary.json cannot be read", d)
        if summary is not None and (d / "metrics.csv").is_file():
            changed = trained_otherwise(summary, cfg) if cfg is not None else []
            if changed:
                log.warning("%s: left out of summary.csv: trained with another configuration (changed: %s)",
                            d, ", ".join(changed))
                continue
            m = read_metrics(d / "metrics.csv")
            m.insert(0, "run", number)
            frames.append(m)
    if not frames:
        (experiment_dir / "summary.csv").unlink(missing_ok=True)
        return None
    allruns = pd.concat(frames, ignore_index=True)
    keys = ["batch", "kind"]
    values = [c for c in METRIC_COLUMNS if c not in keys]
    grouped = allruns.groupby(keys, sort=False)[values]
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=0).add_suffix("_std"))
    out.insert(0, "runs", grouped.size())
    out = out.reset_index()
    write_csv(experiment_dir / "summary.csv", out)
    return out


def find_experiments(*roots: str | os.PathLike) -> list[Path]:
    """Every experiment folder (one holding ``exp_configuration.json`` and run folders) under ``roots``."""
    found = []
    for root in roots:
        root = Path(root)
        candidates = [root] if (root / CONFIG_FILE).is_file() else []
        candidates += [p.parent for p in root.rglob(CONFIG_FILE)]
        for c in candidates:
            if c not in found and any(c.glob("run*/metrics.csv")):
                found.append(c)
    return sorted(found)
