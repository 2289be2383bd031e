"""Paper figures and tables from any set of result folders (``latent-replay figures``).

Every experiment under the given folders is found from its saved ``exp_configuration.json`` (folder
names are never parsed), its finished runs are read (``run<R>/summary.json`` + ``run<R>/metrics.csv``)
and the experiments are grouped by what their configurations say. Runs that are partial (a
``metrics.csv`` without ``summary.json``), unreadable, missing, or trained with another configuration
than the experiment's (its ``summary.json`` records one) are reported and left out.

Figures (each written as ``<out>/<stem>.<format>`` for every requested format; a figure with nothing
to show is skipped with a log line, never written empty). Name (key of :data:`FIGURES`) -> stem:

* ``accuracy_vs_batches`` -> ``fig1_accuracy_vs_batches``: test accuracy vs encountered batches, mean
  over runs with a ±std band, one line per experiment, one panel per scenario; the published curves
  (``reference``; by default on the command line, :data:`REFERENCE_RESULTS`) dashed. Written whenever a
  run finished.
* ``final_accuracy_vs_layer`` -> ``fig2_final_accuracy_vs_layer``: final accuracy (mean ± std) vs replay
  layer in network order, one line per method/replay/memory size/dtype (memory size = marker shape,
  dtype = marker fill, native replay = a star at ``data``), no-replay runs as dotted horizontal lines.
  Written when a scenario has replay at two or more layers.
* ``cost_vs_layer`` -> ``fig3_cost_vs_layer``: measured training seconds per incremental batch vs layer
  (top) over the fraction of forward MACs below the layer (bottom, from the model). Same condition.
* ``memory_vs_layer`` -> ``fig4_memory_vs_layer``: measured replay memory bytes (log) vs layer, one line
  per storage dtype (and memory size), the same number of raw images as a reference line. Written when
  there are two or more (layer, dtype) combinations.
* ``final_accuracy_vs_memory`` -> ``fig5_final_accuracy_vs_memory``: final accuracy vs memory size for
  the configurations run with two or more sizes.
* ``summary`` -> ``summary.csv`` (:func:`summary_table`) and ``summary.md``, written whenever a run
  finished; the markdown lists what was left out and, with ``reference``, the published final values.

Each method has one colour in every figure (:data:`METHOD_COLOURS`; variants of a method are shades of
it, lighter for lower layers); legends use the paper's words (CWR*, AR1*, AR1*-free,
"latent replay @ conv5_4/dw") and name only what differs between experiments; what they all share goes
in the legend title.

Conventions
-----------
* Accuracies are shown and tabulated in percent; spreads are the **population** std over finished
  runs (ddof = 0, as :func:`results.aggregate_runs` and the published NICv2 numbers).
* x axis of figure 1, "encountered batches": the evaluation after batch ``b`` (0-based) is drawn at
  ``b + 1``; the optional evaluation after global iteration 1 (``kind == "iteration_1"``, profile
  ``caffe``) is drawn at 0. The published multi-run curves have ``num_batches + 1`` points whose first
  point is that iteration-1 evaluation, so point ``k`` is drawn at ``k`` and both line up (a curve of
  another length is aligned on its last point).
* Training time per batch (figure 3) is the mean ``train_seconds`` over the incremental batches
  (``b >= 1``; batch 0, which trains the whole network on a larger batch, is left out unless it is the
  only one), then mean ± std over runs.
* Memory footprint (figure 4) is the measured ``memory_bytes`` of the finished runs (patterns, labels and
  quantisation parameters); the reference line is the same number of raw 3x128x128 uint8 images.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import click
import numpy as np
import pandas as pd

from .config import (EXECUTION_KEYS, LATENT_DTYPES, LATENT_LAYERS, METHOD_TITLES, METHODS, REPLAYS, ConfigError,
                     ExperimentConfig)
from .data.filelists import atomic_write_text
from .results import CONFIG_FILE, RUN_DIR, run_dirs, trained_otherwise, write_csv

log = logging.getLogger(__name__)

__all__ = [
    "FIGURES", "Experiment", "Run", "Report", "load_experiments", "summary_table", "accuracy_curve",
    "accuracy_panels", "layer_series", "memory_series", "memory_footprint", "read_reference_tsv",
    "load_reference", "reference_x", "REFERENCE_RESULTS", "make_figures", "build_figures", "figures_command",
]

#: Figure name -> file stem.
FIGURES = {
    "accuracy_vs_batches": "fig1_accuracy_vs_batches",
    "final_accuracy_vs_layer": "fig2_final_accuracy_vs_layer",
    "cost_vs_layer": "fig3_cost_vs_layer",
    "memory_vs_layer": "fig4_memory_vs_layer",
    "final_accuracy_vs_memory": "fig5_final_accuracy_vs_memory",
}

#: One colour per method, used by every figure (variants of a method are shades of it).
METHOD_COLOURS = {"ar1free": "#1f77b4", "ar1": "#d62728", "cwr": "#ff7f0e", "naive": "#7f7f7f", "joint": "#222222"}
#: Published strategies of the CORe50 multi-run TSVs: display name and colour (same as our method's).
REFERENCE_TITLES = {"AR1*": "AR1*", "CWR*": "CWR*", "LWF": "LwF", "NAIVE": "naive", "EWC": "EWC",
                    "AR1*_BN": "AR1* (BN)"}
REFERENCE_COLOURS = {"AR1*": METHOD_COLOURS["ar1"], "CWR*": METHOD_COLOURS["cwr"], "NAIVE": METHOD_COLOURS["naive"],
                     "LWF": "#2ca02c", "EWC": "#9467bd", "AR1*_BN": "#8c564b"}
_EXTRA_COLOURS = ("#bcbd22", "#e377c2", "#17becf", "#8c564b")
#: The published rehearsal-free NICv2 curves shipped with the package (CORe50 multi-run TSVs, CC BY 4.0;
#: source and licence in its README.md): the default of ``latent-replay figures --reference``.
REFERENCE_RESULTS = Path(__file__).resolve().parent / "resources" / "reference_results"
#: Storage of the replay memory (figure 4): colour and legend words.
STORAGE_STYLE = {
    "images": ("#000000", "native replay: uint8 images"),
    "float32": ("#1b9e77", "float32 latents"),
    "float16": ("#d95f02", "float16 latents"),
    "uint8": ("#7570b3", "uint8 latents (per-channel quantised)"),
    "generative": ("#e7298a", "generative latent replay (density models)"),
}
MEMORY_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
DTYPE_FILL = {"float32": "full", "float16": "left", "uint8": "none"}
LINE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "d")

COLUMN_WIDTH = 3.5   # inches, one column of a two-column paper
PAGE_WIDTH = 7.16    # inches, both columns
PANEL_HEIGHT = 2.3
RAW_IMAGE_BYTES = 3 * 128 * 128   # one uint8 128x128 RGB frame
RC = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.title_fontsize": 7, "lines.linewidth": 1.2, "lines.markersize": 4,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "axes.spines.top": False,
    "axes.spines.right": False, "savefig.dpi": 300, "pdf.fonttype": 42, "ps.fonttype": 42,
}

#: Config keys that say nothing about what was trained (or are shown through other means).
_IGNORED_KEYS = {"runs", "out", "name", "device", "cache_dir", *EXECUTION_KEYS, "dataset_root", "filelists",
                 "schema_version", "fidelity", "method", "scenario", "replay", "latent_layer", "replay_memory",
                 "latent_dtype", "profile"}


# ====================================================================== loading
@dataclass
class Run:
    """One finished run: its metrics rows and its summary."""

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


@dataclass
class Experiment:
    """One experiment folder: its configuration, finished runs and what was left out (and why)."""

    path: Path
    config: ExperimentConfig
    runs: list = field(default_factory=list)
    left_out: list = field(default_factory=list)
    missing_runs: list = field(default_factory=list)
    #: Config differences from the other experiments that the named dimensions do not cover
    #: (``key=value`` strings, set by :func:`load_experiments`), and a folder tag for identical configs.
    extras: tuple = ()
    tag: str = ""

    # ---- what was trained
    @property
    def name(self) -> str:
        return self.config.experiment_name

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def scenario(self) -> int:
        return self.config.scenario

    @property
    def replay(self) -> str:
        return self.config.replay

    @property
    def profile(self) -> str:
        return self.config.profile

    @property
    def layer(self) -> str | None:
        """Replay layer (``data`` for native replay), None without replay."""
        return self.config.resolved_latent_layer if self.config.uses_replay else None

    @property
    def memory(self) -> int | None:
        return self.config.replay_memory if self.config.uses_replay else None

    @property
    def storage(self) -> str | None:
        """How the memory is stored: ``images`` (native), a latent dtype, or None without replay."""
        if not self.config.uses_replay:
            return None
        return self.config.latent_dtype if self.config.uses_latent else "images"

    @property
    def finished(self) -> bool:
        return bool(self.runs)

    def sort_key(self) -> tuple:
        return (self.scenario, METHODS.index(self.method), REPLAYS.index(self.replay),
                LATENT_LAYERS.index(self.layer) if self.layer else -1, self.memory or 0,
                _dtype_rank(self.storage), self.profile, self.extras, self.tag, str(self.path))

    # ---- per-run values (percent for accuracies)
    def values(self, what: str) -> np.ndarray:
        scale = 100.0 if "accuracy" in what else 1.0
        return np.array([getattr(r, what) * scale for r in self.runs], dtype=float)

    @property
    def device(self) -> str:
        devices = Counter(r.device for r in self.runs)
        return devices.most_common(1)[0][0] if devices else "unknown device"


def _dtype_rank(storage: str | None) -> int:
    order = ("images",) + LATENT_DTYPES + ("generative",)
    return order.index(storage) if storage in order else -1


def _read_run(d: Path) -> tuple[Run | None, str | None]:
    """A finished run, or (None, why it is left out)."""
    metrics_file, summary_file = d / "metrics.csv", d / "summary.json"
    if not metrics_file.is_file():
        return None, "no metrics.csv" + (" (summary.json without metrics)" if summary_file.is_file() else "")
    if not summary_file.is_file():
        return None, "partial: metrics.csv without summary.json (unfinished or running)"
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return None, f"unreadable summary.json ({exc})"
    if summary.get("finished") is False:
        return None, "partial: summary.json says finished = false"
    try:
        metrics = pd.read_csv(metrics_file)
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


def _read_experiment(exp_dir: Path, notes: list[str]) -> Experiment | None:
    try:
        cfg = ExperimentConfig.load(exp_dir / CONFIG_FILE)
    except ConfigError as exc:
        notes.append(f"{exp_dir}: left out, invalid configuration ({exc})")
        log.warning("left out %s: %s", exp_dir, exc)
        return None
    exp = Experiment(exp_dir, cfg)
    present = []
    for number, d in run_dirs(exp_dir):
        present.append(number)
        run, why = _read_run(d)
        changed = trained_otherwise(run.summary, cfg) if run is not None else []
        if changed:   # e.g. the config was replaced (prepare --force) and the run not trained again yet
            exp.left_out.append(f"{d.name}: trained with another configuration than the experiment's "
                                f"(changed: {', '.join(changed)})")
        elif run is None:
            exp.left_out.append(f"{d.name}: {why}")
        else:
            exp.runs.append(run)
    exp.missing_runs = [r for r in cfg.runs if r not in present]
    lengths = Counter(r.batches for r in exp.runs)
    if len(lengths) > 1:
        notes.append(f"{exp_dir}: finished runs cover different numbers of batches "
                     f"({', '.join(f'{n} batches x{c}' for n, c in sorted(lengths.items()))}); curves average what is there")
    short = [r for r in exp.runs if isinstance(r.summary.get("scenario_batches"), int)
             and r.batches < r.summary["scenario_batches"]]
    if short:
        which = ", ".join(f"run {r.number}: {r.batches} of {r.summary['scenario_batches']}" for r in short)
        notes.append(f"{exp_dir}: stopped before the end of the scenario by max_batches ({which} batches); "
                     "the final accuracy of such a run is that of the last batch it trained")
    for msg in exp.left_out:
        notes.append(f"{exp_dir}: {msg}; left out")
        log.warning("%s %s; left out", exp_dir, msg)
    if exp.missing_runs:
        notes.append(f"{exp_dir}: configured run(s) {', '.join(map(str, exp.missing_runs))} not found")
        log.info("%s: configured run(s) %s not found", exp_dir, ", ".join(map(str, exp.missing_runs)))
    if not exp.runs:
        notes.append(f"{exp_dir}: no finished run; experiment left out")
        log.warning("%s: no finished run; experiment left out", exp_dir)
    return exp


def load_experiments(result_dirs: Iterable[str | Path], notes: list[str] | None = None) -> list[Experiment]:
    """Every experiment (a folder holding ``exp_configuration.json``) under ``result_dirs``, sorted.

    Experiments without a finished run are included (``finished`` is False) so they can be reported;
    problems (invalid configs, partial runs, missing runs) are appended to ``notes`` and logged.
    """
    notes = [] if notes is None else notes
    seen: dict[Path, Path] = {}
    for root in result_dirs:
        root = Path(root)
        if not root.exists():
            notes.append(f"{root}: does not exist")
            log.warning("%s does not exist", root)
            continue
        configs = [root / CONFIG_FILE] if (root / CONFIG_FILE).is_file() else []
        configs += sorted(root.rglob(CONFIG_FILE))
        for c in configs:
            seen.setdefault(c.parent.resolve(), c.parent)
    experiments = [e for d in seen.values() if (e := _read_experiment(d, notes)) is not None]
    _set_extras(experiments)
    return sorted(experiments, key=Experiment.sort_key)


def _flat_config(cfg: ExperimentConfig) -> dict:
    data = {k: v for k, v in cfg.to_dict().items() if k not in _IGNORED_KEYS}
    # switches that differ from the experiment's profile (the profile itself is shown as such)
    data.update({f"fidelity.{k}": v for k, v in cfg.fidelity_overrides().items()})
    for k, v in list(data.items()):
        if isinstance(v, dict):  # BRN settings
            del data[k]
            data.update({f"{k}.{kk}": vv for kk, vv in v.items()})
    return data


def _set_extras(experiments: list[Experiment]) -> None:
    """Fill ``extras`` (config keys that differ between experiments) and ``tag`` (identical configs)."""
    flats = [_flat_config(e.config) for e in experiments]
    keys = sorted({k for f in flats for k in f})
    varying = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
    for e, f in zip(experiments, flats):  # None: not set (derived or the profile's default)
        e.extras = tuple(f"{k}={f[k]}" for k in varying if f.get(k) is not None)
    groups: dict[tuple, list[Experiment]] = {}
    for e in experiments:
        groups.setdefault(_identity(e), []).append(e)
    for same in groups.values():
        if len(same) > 1:
            for e in same:
                e.tag = f"{e.path.parent.name}/{e.path.name}"


def _identity(e: Experiment) -> tuple:
    return (e.method, e.scenario, e.replay, e.layer, e.memory, e.storage, e.profile, e.extras)


# ====================================================================== labels and colours
def _replay_words(e: Experiment) -> str:
    if e.replay == "native":
        return "native replay"
    return f"{e.replay} replay @ {e.layer}"


def _method_words(e: Experiment) -> str:
    if e.method == "joint":
        return "joint (cumulative)"
    return METHOD_TITLES[e.method]


def _label(e: Experiment, show: set, *, layer: bool = True, memory: bool = True) -> str:
    """Legend text in the paper's words, e.g. ``AR1*-free + latent replay @ conv5_4/dw``."""
    if e.replay == "none":
        text = _method_words(e) + ("" if e.method == "joint" else ", no replay")
    elif layer or e.replay == "native":
        text = f"{_method_words(e)} + {_replay_words(e)}"
    else:
        text = f"{_method_words(e)} + {e.replay} replay"
    parts = []
    if memory and "memory" in show and e.memory:
        parts.append(f"M={e.memory}")
    if "dtype" in show and e.storage not in (None, "images"):
        parts.append(e.storage)
    if "profile" in show:
        parts.append(f"{e.profile} profile")
    if "device" in show:
        parts.append(e.device)
    parts += list(e.extras)
    return text + (f" ({', '.join(parts)})" if parts else "") + (f" [{e.tag}]" if e.tag else "")


def _shown(exps: Sequence[Experiment], device: bool = False) -> set:
    show = set()
    if len({e.memory for e in exps if e.memory}) > 1:
        show.add("memory")
    if len({e.storage for e in exps if e.storage not in (None, "images")}) > 1:
        show.add("dtype")
    if len({e.profile for e in exps}) > 1:
        show.add("profile")
    if device and len({e.device for e in exps}) > 1:
        show.add("device")
    return show


def _constants_title(exps: Sequence[Experiment], show: set, *, memory: bool = True, device: bool = False) -> str | None:
    """Legend title naming what all experiments share (memory size, dtype, profile, device)."""
    parts = []
    mems = {e.memory for e in exps if e.memory}
    if memory and "memory" not in show and len(mems) == 1:
        parts.append(f"replay memory M = {mems.pop()} patterns")
    dts = {e.storage for e in exps if e.storage not in (None, "images")}
    if "dtype" not in show and len(dts) == 1 and dts != {"float32"}:
        parts.append(f"{dts.pop()} latents")
    profiles = {e.profile for e in exps}
    if "profile" not in show and profiles != {"fixed"}:
        parts.append(f"{profiles.pop()} profile")
    devs = {e.device for e in exps}
    if device and "device" not in show and len(devs) == 1:
        parts.append(f"measured on {devs.pop()}")
    return "; ".join(parts) or None


def _mix(colour: str, t: float) -> tuple:
    """Lighten (t > 0, towards white) or darken (t < 0, towards black) a colour."""
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(colour))
    target = np.ones(3) if t > 0 else np.zeros(3)
    return tuple(rgb + (target - rgb) * abs(t))


def _line_key(e: Experiment) -> tuple:
    """Figure 1 colour key: the experiment without its scenario (same shade in every panel)."""
    i = _identity(e)
    return (i[0],) + i[2:] + (e.tag,)


def _keys_by_method(exps: Sequence[Experiment], key: Callable) -> dict[str, list]:
    """method -> distinct keys, in network order of their first experiment (scenario ignored)."""
    first: dict = {}
    for e in exps:
        k = key(e)
        if k is not None:
            first[k] = min(first.get(k, (e.sort_key()[1:],)), (e.sort_key()[1:],))
    out: dict[str, list] = {}
    for k in sorted(first, key=lambda k: first[k]):
        out.setdefault(k[0], []).append(k)
    return out


def _colours(keys_by_method: dict[str, list]) -> dict:
    """A shade of the method's colour per variant: lighter for earlier (lower-layer) variants."""
    out = {}
    for method, keys in keys_by_method.items():
        base = METHOD_COLOURS.get(method, "#444444")
        n = len(keys)
        span = min(1.0, 0.4 + 0.2 * (n - 1))
        ts = [0.0] if n == 1 else list(np.linspace(0.5 * span, -0.35 * span, n))
        if method == "joint":
            ts = [0.0] if n == 1 else list(np.linspace(0.6, 0.0, n))
        for k, t in zip(keys, ts):
            out[k] = _mix(base, t)
    return out


def _reference_colour(strategy: str, i: int) -> str:
    return REFERENCE_COLOURS.get(strategy.upper(), _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)])


def _reference_title(strategy: str) -> str:
    return REFERENCE_TITLES.get(strategy.upper(), strategy)


# ====================================================================== data for the figures
def accuracy_curve(exp: Experiment) -> pd.DataFrame:
    """Test accuracy (%) per encountered batch: columns ``x``, ``mean``, ``std`` (population), ``runs``.

    The evaluation after batch ``b`` is at ``x = b + 1``; an ``iteration_1`` evaluation at ``x = 0``.
    """
    frames = []
    for r in exp.runs:
        m = r.metrics
        m = m[m["kind"].isin(["batch", "iteration_1"])]
        x = np.where(m["kind"] == "batch", m["batch"].astype(int) + 1, 0)
        frames.append(pd.DataFrame({"run": r.number, "x": x, "acc": m["test_accuracy"].astype(float) * 100.0}))
    if not frames:
        return pd.DataFrame(columns=["x", "mean", "std", "runs"])
    allruns = pd.concat(frames, ignore_index=True).drop_duplicates(["run", "x"], keep="last")
    g = allruns.groupby("x")["acc"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0), "runs": g.size()}).reset_index()


@dataclass
class Line:
    """One drawn line of figure 1."""

    experiment: Experiment
    label: str
    colour: tuple
    curve: pd.DataFrame


def accuracy_panels(exps: Sequence[Experiment]) -> dict[int, list[Line]]:
    """Figure 1's grouping: scenario -> one line per experiment (method / replay / layer / ...)."""
    exps = sorted((e for e in exps if e.finished), key=Experiment.sort_key)
    show = _shown(exps)
    colours = _colours(_keys_by_method(exps, _line_key))
    panels: dict[int, list[Line]] = {}
    for e in exps:
        colour = colours[_line_key(e)]
        panels.setdefault(e.scenario, []).append(Line(e, _label(e, show), colour, accuracy_curve(e)))
    return dict(sorted(panels.items()))


@dataclass
class Series:
    """One line of figures 2, 3 and 5: a configuration measured at several x (layers or memory sizes)."""

    key: tuple
    label: str
    method: str
    colour: tuple = (0, 0, 0)
    marker: str = "o"
    #: marker fill: full (float32 latents, images), left half (float16), none (uint8)
    fill: str = "full"
    #: x (layer name or memory size) -> (mean, std, runs, experiment)
    points: dict = field(default_factory=dict)

    def frame(self, order: Sequence | None = None) -> pd.DataFrame:
        xs = [x for x in order if x in self.points] if order is not None else sorted(self.points)
        return pd.DataFrame({"x": xs, "mean": [self.points[x][0] for x in xs],
                             "std": [self.points[x][1] for x in xs], "runs": [self.points[x][2] for x in xs]})


def _stats(values: np.ndarray) -> tuple[float, float, int]:
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan"), 0
    return float(values.mean()), float(values.std(ddof=0)), int(len(values))


def _series_order(key: tuple) -> tuple:
    """Legend order of a series key: method, replay, memory size or layer, dtype, the rest."""
    method, replay, x, storage, *rest = key
    x = LATENT_LAYERS.index(x) if isinstance(x, str) else (x or 0)
    return (METHODS.index(method), REPLAYS.index(replay), x, _dtype_rank(storage), tuple(map(str, rest)))


def _series_panels(exps: Sequence[Experiment], value: str, along: str, device: bool = False) -> dict:
    """scenario -> (series, baselines): series vary ``along`` (``layer`` or ``memory``); baselines are
    the experiments without replay (drawn as horizontal lines). For ``memory`` only the series run with
    two or more memory sizes are kept."""
    exps = sorted((e for e in exps if e.finished), key=Experiment.sort_key)
    show = _shown(exps, device=device)
    if along == "memory":
        show.discard("memory")
    panels: dict[int, tuple[dict, list]] = {}
    for e in exps:
        series, baselines = panels.setdefault(e.scenario, ({}, []))
        if e.replay == "none":
            baselines.append(Series(_series_key(e, along, show), _label(e, show), e.method,
                                    points={None: (*_stats(e.values(value)), e)}))
            continue
        key = _series_key(e, along, show)
        x = e.layer if along == "layer" else e.memory
        if key not in series:
            series[key] = Series(key, _label(e, show, layer=along != "layer", memory=along != "memory"), e.method)
        series[key].points[x] = (*_stats(e.values(value)), e)
    if along == "memory":
        for series, _ in panels.values():
            for k in [k for k, s in series.items() if len(s.points) < 2]:
                del series[k]
    keys = sorted({k for series, _ in panels.values() for k in series}, key=_series_order)
    by_method: dict[str, list] = {}
    for k in keys:
        by_method.setdefault(k[0], []).append(k)
    colours = _colours(by_method)
    memories = sorted({e.memory for e in exps if e.memory})
    out = {}
    for scenario, (series, baselines) in sorted(panels.items()):
        for s in series.values():
            s.colour = colours[s.key]
            s.fill = DTYPE_FILL.get(s.key[3], "full")
            if along == "layer":
                s.marker = "*" if s.key[1] == "native" else MEMORY_MARKERS[memories.index(s.key[2]) % len(MEMORY_MARKERS)]
        for b in baselines:
            b.colour = METHOD_COLOURS.get(b.method, "#444444")
        out[scenario] = (sorted(series.values(), key=lambda s: _series_order(s.key)), baselines)
    return out


def _series_key(e: Experiment, along: str, show: set) -> tuple:
    """The series an experiment belongs to in figures 2, 3 (``along="layer"``) and 5 (``"memory"``)."""
    dev = (e.device,) if "device" in show else ()
    if e.replay == "none":
        return (e.method, "none", e.profile, e.extras, e.tag) + dev
    if along == "layer":
        return (e.method, e.replay, e.memory, e.storage, e.profile, e.extras, e.tag) + dev
    return (e.method, e.replay, e.layer, e.storage, e.profile, e.extras, e.tag) + dev


def layer_series(exps: Sequence[Experiment], value: str = "final_accuracy") -> dict[int, tuple[list[Series], list[Series]]]:
    """Figures 2 and 3: scenario -> (series over latent layers, no-replay baselines).

    A series is one (method, replay, memory size, storage dtype, profile, other config differences);
    native replay is its own series with the single layer ``data``. ``value`` is a :class:`Run`
    attribute (``final_accuracy``, ``average_accuracy`` in %, ``seconds_per_batch`` ...). Scenarios with
    replay at fewer than two layers are left out.
    """
    panels = _series_panels(exps, value, "layer", device=value == "seconds_per_batch")
    return {s: p for s, p in panels.items() if len({x for ser in p[0] for x in ser.points}) >= 2}


def memory_series(exps: Sequence[Experiment], value: str = "final_accuracy") -> dict[int, tuple[list[Series], list[Series]]]:
    """Figure 5: scenario -> (series over memory sizes, no-replay baselines); only the configurations
    run with two or more memory sizes are kept, and scenarios without one are left out."""
    panels = _series_panels(exps, value, "memory")
    return {s: p for s, p in panels.items() if p[0]}


def memory_footprint(exps: Sequence[Experiment]) -> pd.DataFrame:
    """Figure 4's data: measured replay memory per (layer, storage, memory size), pooled over scenarios,
    methods and runs: columns ``layer``, ``storage``, ``memory``, ``bytes``, ``patterns``, ``raw_image_bytes``
    (the same number of uint8 128x128 RGB frames), ``runs``. ``storage`` is the latent dtype, ``images``
    for native replay and ``generative`` for generative latent replay (density models, not latents: its
    bytes are never pooled with stored latents)."""
    rows = []
    for e in exps:
        if not e.finished or e.replay == "none":
            continue
        for r in e.runs:
            if np.isfinite(r.memory_bytes) and r.memory_bytes > 0:
                patterns = r.memory_patterns if np.isfinite(r.memory_patterns) and r.memory_patterns > 0 else e.memory
                storage = "generative" if e.replay == "generative" else e.storage
                rows.append({"layer": e.layer, "storage": storage, "memory": e.memory,
                             "bytes": r.memory_bytes, "patterns": patterns})
    cols = ["layer", "storage", "memory", "bytes", "patterns", "raw_image_bytes", "runs"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    g = df.groupby(["layer", "storage", "memory"], sort=False)
    out = g.agg(bytes=("bytes", "mean"), patterns=("patterns", "mean"), runs=("bytes", "size")).reset_index()
    out["raw_image_bytes"] = out["patterns"] * RAW_IMAGE_BYTES
    out["_l"] = out["layer"].map(LATENT_LAYERS.index)
    out["_d"] = out["storage"].map(_dtype_rank)
    return out.sort_values(["memory", "_d", "_l"]).drop(columns=["_l", "_d"]).reset_index(drop=True)[cols]


# ====================================================================== summary table
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


# ====================================================================== reference curves
def read_reference_tsv(path: str | Path) -> tuple[int | None, dict[str, np.ndarray]]:
    """Parse a CORe50 multi-run TSV: ``(scenario, {strategy: runs x points array in %})``.

    Format: blocks introduced by ``#`` comment lines (``# scenario: NICv2 - 391``,
    ``# strategy: AR1*``), then one tab-separated line per run with decimal commas. The scenario is the
    number in the file name (``results_391_multirun.tsv``), else the one in the header, else None.
    """
    path = Path(path)
    curves: dict[str, list[list[float]]] = {}
    header_scenario = None
    strategy = None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            m = re.match(r"#\s*(\w+)\s*:\s*(.*)$", text)
            if m and m.group(1).lower() == "strategy":
                strategy = m.group(2).strip()
                if strategy in curves:
                    raise ValueError(f"{path}:{n}: strategy {strategy!r} appears twice")
                curves[strategy] = []
            elif m and m.group(1).lower() == "scenario":
                found = re.findall(r"\d+", m.group(2))
                header_scenario = int(found[-1]) if found else header_scenario
            continue
        if strategy is None:
            raise ValueError(f"{path}:{n}: values before any '# strategy:' line")
        try:
            values = [float(v.strip().replace(",", ".")) for v in text.split("\t") if v.strip()]
        except ValueError:
            raise ValueError(f"{path}:{n}: not tab-separated numbers with decimal commas") from None
        if curves[strategy] and len(values) != len(curves[strategy][0]):
            raise ValueError(f"{path}:{n}: {len(values)} values, the block's first run has {len(curves[strategy][0])}")
        curves[strategy].append(values)
    empty = [s for s, v in curves.items() if not v]
    if empty:
        raise ValueError(f"{path}: strategy {empty[0]!r} has no run")
    if not curves:
        raise ValueError(f"{path}: no '# strategy:' block found")
    in_name = [int(x) for x in re.findall(r"\d+", path.name)]
    from_name = next((x for x in in_name if x in (79, 196, 391)), None)
    scenario = from_name if from_name is not None else header_scenario
    if from_name is not None and header_scenario is not None and from_name != header_scenario:
        log.warning("%s: file name says NICv2-%d, header says NICv2-%d; using the file name", path, from_name,
                    header_scenario)
    return scenario, {s: np.array(v, dtype=float) for s, v in curves.items()}


def load_reference(path: str | Path, strategies: Sequence[str] | None = None) -> dict[int, dict[str, np.ndarray]]:
    """Published curves: scenario -> {strategy: runs x points (%)} from one TSV or a folder of
    ``results_<S>_multirun.tsv`` files; ``strategies`` keeps only those (names as in the files or as
    displayed, case-insensitive)."""
    path = Path(path)
    files = sorted(path.glob("*.tsv")) if path.is_dir() else [path]
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if not files:
        raise ValueError(f"{path}: no .tsv file found")
    wanted = {s.strip().lower() for s in strategies} if strategies else None
    out: dict[int, dict[str, np.ndarray]] = {}
    for f in files:
        scenario, curves = read_reference_tsv(f)
        if scenario is None:
            raise ValueError(f"{f}: cannot tell the scenario (no 79/196/391 in the name or header)")
        if wanted is not None:
            curves = {s: a for s, a in curves.items() if s.lower() in wanted or _reference_title(s).lower() in wanted}
        out.setdefault(scenario, {}).update(curves)
    if wanted is not None:
        found = {n.lower() for c in out.values() for s in c for n in (s, _reference_title(s))}
        missing = wanted - found
        if missing:
            raise ValueError(f"{path}: no reference strategy named {', '.join(sorted(missing))}")
    return out


def reference_x(n_points: int, scenario: int) -> np.ndarray:
    """x (encountered batches) of a published curve: ``num_batches + 1`` points run 0..num_batches
    (point 0 = after iteration 1); another length is aligned on its last point."""
    return np.arange(n_points) + (scenario + 1 - n_points)


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


def save_figure(fig, paths: Sequence[Path], **savefig_kw) -> list[Path]:
    """``fig`` saved to every path, in the format its suffix names, each through a temporary file in
    the same folder renamed into place: an interrupted save never leaves a half-written figure."""
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
    all_labels = list(dict.fromkeys(labels + ref_labels))
    ncol, nrows = _legend_layout(all_labels, len(scenarios))
    finished = [e for e in exps if e.finished]
    title = _constants_title(finished, _shown(finished))
    title, tlines = _wrap_title(title, len(scenarios))
    fig, axes = _figure(len(scenarios), legend_rows=nrows + tlines, sharey=True)
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
    order = [lb for lb in all_labels if lb in handles]
    _add_legend(fig, [handles[lb] for lb in order], order, ncol, title)
    return _save(fig, out, FIGURES["accuracy_vs_batches"], formats), None


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
    labels = list(dict.fromkeys(s.label for ser, base in panels.values() for s in ser + base))
    ncol, nrows = _legend_layout(labels, len(panels))
    used = [p[3] for ser, base in panels.values() for s in ser + base for p in s.points.values()]
    title = _constants_title(used, _shown(exps), memory=True)
    title, tlines = _wrap_title(title, len(panels))
    fig, axes = _figure(len(panels), legend_rows=nrows + tlines, sharey=True, height=PANEL_HEIGHT + 0.3)
    handles: dict[str, object] = {}
    for ax, (scenario, (series, baselines)) in zip(axes[0], panels.items()):
        layers = [l for l in LATENT_LAYERS if any(l in s.points for s in series)]
        _draw_series_over_layers(ax, series, baselines, layers, handles)
        _layer_ticks(ax, layers)
        ax.set_title(f"NICv2-{scenario}")
        ax.set_xlabel("replay layer (network order)")
        if ax is axes[0][0]:
            ax.set_ylabel("final test accuracy (%)")
    order = [lb for lb in labels if lb in handles]
    _add_legend(fig, [handles[lb] for lb in order], order, ncol, title)
    return _save(fig, out, FIGURES["final_accuracy_vs_layer"], formats), None


def _fig_cost_vs_layer(exps, out, formats) -> tuple[list[Path], str | None]:
    from .models import mac_fraction_below

    panels = layer_series(exps, "seconds_per_batch")
    if not panels:
        return [], "replay was run at fewer than two layers in every scenario"
    labels = list(dict.fromkeys(s.label for ser, base in panels.values() for s in ser + base))
    ncol, nrows = _legend_layout(labels, len(panels))
    used = [p[3] for ser, base in panels.values() for s in ser + base for p in s.points.values()]
    title = "; ".join(filter(None, ["time per incremental batch (batch 0 left out), mean\u00a0±\u00a0std over runs",
                                    _constants_title(used, _shown(exps, device=True), device=True)]))
    title, tlines = _wrap_title(title, len(panels))
    fig, axes = _figure(len(panels), nrows=2, legend_rows=nrows + tlines, sharex="col",
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
    order = [lb for lb in labels if lb in handles]
    _add_legend(fig, [handles[lb] for lb in order], order, ncol, title)
    return _save(fig, out, FIGURES["cost_vs_layer"], formats), None


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
    ncol, nrows = _legend_layout(labels + ref_labels, 1)
    title = f"replay memory M = {memories[0]} patterns" if len(memories) == 1 else None
    title, tlines = _wrap_title(title, 1)
    fig, axes = _figure(1, legend_rows=nrows + tlines, height=PANEL_HEIGHT + 0.3)
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
    _add_legend(fig, handles, names, ncol, title)
    return _save(fig, out, FIGURES["memory_vs_layer"], formats), None


def _fig_final_vs_memory(exps, out, formats) -> tuple[list[Path], str | None]:
    panels = memory_series(exps, "final_accuracy")
    if not panels:
        return [], "no configuration was run with two or more memory sizes"
    labels = list(dict.fromkeys(s.label for ser, base in panels.values() for s in ser + base))
    ncol, nrows = _legend_layout(labels, len(panels))
    used = [p[3] for ser, base in panels.values() for s in ser + base for p in s.points.values()]
    title = _constants_title(used, _shown(exps), memory=False)
    title, tlines = _wrap_title(title, len(panels))
    fig, axes = _figure(len(panels), legend_rows=nrows + tlines, sharey=True)
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
    order = [lb for lb in labels if lb in handles]
    _add_legend(fig, [handles[lb] for lb in order], order, ncol, title)
    return _save(fig, out, FIGURES["final_accuracy_vs_memory"], formats), None


# ====================================================================== entry points
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
    from .glr_bench import bench_figures

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
