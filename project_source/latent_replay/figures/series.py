"""The data each figure draws, from the experiments: accuracy curves (figure 1), series over replay layers
(figures 2, 3) and memory sizes (figure 5), and the memory footprint (figure 4)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import LATENT_LAYERS
from ..registry import METHODS, REPLAYS
from .experiments import Experiment, _dtype_rank
from .style import DTYPE_FILL, MEMORY_MARKERS, METHOD_COLOURS, _colours, _keys_by_method, _label, _line_key, _shown

RAW_IMAGE_BYTES = 3 * 128 * 128   # one uint8 128x128 RGB frame


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
    return (METHODS.names().index(method), REPLAYS.names().index(replay), x, _dtype_rank(storage), tuple(map(str, rest)))


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
