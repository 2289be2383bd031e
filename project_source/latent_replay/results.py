"""Result files: per-run metrics and summaries, per-experiment aggregates, and discovery.

Layout (every file written atomically)::

    <out>/<experiment>/exp_configuration.json     the config the runs were trained with
    <out>/<experiment>/run<R>/metrics.csv          one row per evaluation
    <out>/<experiment>/run<R>/summary.json         written when the run finishes
    <out>/<experiment>/run<R>/checkpoint.pt        state after the last finished batch (resume)
    <out>/<experiment>/summary.csv                 mean and std over finished runs, per evaluation

``metrics.csv`` columns: :data:`METRIC_COLUMNS`. ``kind`` is ``batch`` for the evaluation after a
batch and ``iteration_1`` for the original's extra evaluation after the first iteration (B7).

Every reader of these files goes through here: the trainer (:func:`read_summary`, :func:`stale_runs`),
``latent-replay figures`` (:func:`experiment_folders`, :func:`finished_runs`, :func:`read_run`: a
:class:`Run`), ``sweep status`` (:func:`evaluated_batches`). Writers: :func:`write_metrics`,
:func:`write_json`, :func:`write_csv` and :func:`save_figure` (a matplotlib figure), all atomic.
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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

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


def _load_summary(run_folder: str | os.PathLike) -> dict:
    """A run folder's ``summary.json``; OSError or ValueError (saying why) when absent or unreadable."""
    summary = json.loads((Path(run_folder) / "summary.json").read_text(encoding="utf-8"))
    if not isinstance(summary, dict):
        raise ValueError("not a JSON object")
    return summary


def read_summary(run_folder: str | os.PathLike) -> dict | None:
    """A run folder's ``summary.json`` (written when the run finished), or None when absent or unreadable."""
    try:
        return _load_summary(run_folder)
    except (OSError, ValueError):
        return None


def evaluated_batches(run_folder: str | os.PathLike) -> int:
    """Evaluations after a batch in a run folder's metrics.csv so far (the trainer rewrites it after
    every batch); 0 when absent or unreadable. Read without pandas (``sweep status`` reads many)."""
    try:
        lines = (Path(run_folder) / "metrics.csv").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return 0
    if not lines or "kind" not in lines[0].split(","):
        return max(0, len(lines) - 1)
    col = lines[0].split(",").index("kind")
    return sum(1 for ln in lines[1:] if len(ln.split(",")) > col and ln.split(",")[col] == "batch")


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


def save_figure(fig, paths: Sequence[Path], **savefig_kw) -> list[Path]:
    """``fig`` (matplotlib) saved to every path, in the format its suffix names, each through a temporary
    file in the same folder renamed into place: an interrupted save never leaves a half-written figure."""
    paths = list(paths)
    quiet = logging.getLogger("fontTools")  # PDF font subsetting logs every glyph at INFO
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))
    try:
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.stem}.tmp{p.suffix}")
            try:
                fig.savefig(tmp, format=p.suffix[1:] or None, **savefig_kw)
                os.replace(tmp, p)
            finally:
                tmp.unlink(missing_ok=True)
    finally:
        quiet.setLevel(level)
    return paths


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


@dataclass
class Run:
    """One finished run (:func:`read_run`): its metrics rows and its summary. The values come from the
    summary, or from the metrics where an older summary lacks them."""

    number: int
    metrics: pd.DataFrame
    summary: dict

    @property
    def batch_rows(self) -> pd.DataFrame:
        return self.metrics[self.metrics["kind"] == "batch"].sort_values("batch")

    def _value(self, key: str, fallback):
        v = self.summary.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float(fallback())

    @property
    def final_accuracy(self) -> float:
        """Fraction 0..1."""
        return self._value("final_accuracy", lambda: self.batch_rows["test_accuracy"].iloc[-1])

    @property
    def average_accuracy(self) -> float:
        """Fraction 0..1 (mean over the evaluations after each batch)."""
        return self._value("average_accuracy", lambda: self.batch_rows["test_accuracy"].mean())

    @property
    def train_seconds(self) -> float:
        return self._value("train_seconds", lambda: self.metrics["train_seconds"].sum())

    @property
    def eval_seconds(self) -> float:
        return self._value("eval_seconds", lambda: self.metrics["eval_seconds"].sum())

    @property
    def memory_bytes(self) -> float:
        return self._value("memory_bytes", lambda: self.batch_rows["memory_bytes"].iloc[-1])

    @property
    def memory_patterns(self) -> float:
        return float(self.batch_rows["memory_patterns"].iloc[-1])

    @property
    def batches(self) -> int:
        return int(self.batch_rows["batch"].max()) + 1

    @property
    def seconds_per_batch(self) -> float:
        """Mean training seconds of the incremental batches (b >= 1; batch 0 when it is the only one)."""
        rows = self.batch_rows
        inc = rows[rows["batch"] >= 1]
        return float((inc if len(inc) else rows)["train_seconds"].mean())

    @property
    def device(self) -> str:
        return str(self.summary.get("device", "unknown device"))


def read_run(run_folder: str | os.PathLike) -> tuple[Run | None, str | None]:
    """A finished run (``summary.json`` and ``metrics.csv`` with an evaluation after a batch), or (None,
    why it does not count: missing, partial or unreadable)."""
    import pandas as pd

    d = Path(run_folder)
    metrics_file, summary_file = d / "metrics.csv", d / "summary.json"
    if not metrics_file.is_file():
        return None, "no metrics.csv" + (" (summary.json without metrics)" if summary_file.is_file() else "")
    if not summary_file.is_file():
        return None, "partial: metrics.csv without summary.json (unfinished or running)"
    try:
        summary = _load_summary(d)
    except (OSError, ValueError) as exc:
        return None, f"unreadable summary.json ({exc})"
    if summary.get("finished") is False:
        return None, "partial: summary.json says finished = false"
    try:
        metrics = read_metrics(metrics_file)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        return None, f"unreadable metrics.csv ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    for col in ("batch", "test_accuracy"):
        if col not in metrics.columns:
            return None, f"metrics.csv has no column {col!r}"
    if "kind" not in metrics.columns:
        metrics["kind"] = "batch"
    for col in ("batch", "test_accuracy", "train_seconds", "eval_seconds", "memory_bytes", "memory_patterns"):
        metrics[col] = pd.to_numeric(metrics[col], errors="coerce") if col in metrics.columns else np.nan
    metrics = metrics.dropna(subset=["batch", "test_accuracy"])
    if not (metrics["kind"] == "batch").any():
        return None, "metrics.csv has no evaluation after a batch"
    return Run(int(RUN_DIR.match(d.name).group(1)), metrics, summary), None


def finished_runs(experiment_dir: str | os.PathLike, cfg: ExperimentConfig) -> tuple[list[Run], list[str], list[int]]:
    """The runs of an experiment that count (:func:`read_run`, trained as ``cfg`` says), the run folders left
    out (``run<R>: why``), and the runs of ``cfg`` without a folder."""
    runs, left_out, present = [], [], []
    for number, d in run_dirs(experiment_dir):
        present.append(number)
        run, why = read_run(d)
        changed = trained_otherwise(run.summary, cfg) if run is not None else []
        if changed:   # e.g. the config was replaced (prepare --force) and the run not trained again yet
            left_out.append(f"{d.name}: trained with another configuration than the experiment's "
                            f"(changed: {', '.join(changed)})")
        elif run is None:
            left_out.append(f"{d.name}: {why}")
        else:
            runs.append(run)
    return runs, left_out, [r for r in cfg.runs if r not in present]


def experiment_folders(result_dirs: Iterable[str | os.PathLike]) -> list[Path]:
    """Every experiment folder (one holding ``exp_configuration.json``, finished or not) under ``result_dirs``
    (those that exist), each once."""
    seen: dict[Path, Path] = {}
    for root in map(Path, result_dirs):
        configs = [root / CONFIG_FILE] if (root / CONFIG_FILE).is_file() else []
        configs += sorted(root.rglob(CONFIG_FILE)) if root.exists() else []
        for c in configs:
            seen.setdefault(c.parent.resolve(), c.parent)
    return list(seen.values())


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
