"""How the figures look: file stems, colours, markers, sizes, matplotlib settings, and the legend words
(the paper's: CWR*, AR1*, AR1*-free, "latent replay @ conv5_4/dw") and colour shades of experiments."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..registry import METHODS
from .experiments import Experiment, _identity

#: Figure name -> file stem.
FIGURES = {
    "accuracy_vs_batches": "fig1_accuracy_vs_batches",
    "final_accuracy_vs_layer": "fig2_final_accuracy_vs_layer",
    "cost_vs_layer": "fig3_cost_vs_layer",
    "memory_vs_layer": "fig4_memory_vs_layer",
    "final_accuracy_vs_memory": "fig5_final_accuracy_vs_memory",
}

#: One colour per method, used by every figure (variants of a method are shades of it).
METHOD_COLOURS = {e.name: e.colour for e in METHODS if e.colour}
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
RC = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.title_fontsize": 7, "lines.linewidth": 1.2, "lines.markersize": 4,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "axes.spines.top": False,
    "axes.spines.right": False, "savefig.dpi": 300, "pdf.fonttype": 42, "ps.fonttype": 42,
}


# ====================================================================== labels and colours
def _replay_words(e: Experiment) -> str:
    if e.replay == "native":
        return "native replay"
    return f"{e.replay} replay @ {e.layer}"


def _method_words(e: Experiment) -> str:
    if e.method == "joint":
        return "joint (cumulative)"
    return METHODS.get(e.method).title


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
