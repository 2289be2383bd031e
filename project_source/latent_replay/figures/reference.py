"""The published curves (CORe50 multi-run TSVs) drawn dashed on figure 1 and tabulated in summary.md."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .style import METHOD_COLOURS

log = logging.getLogger(__package__)   # "latent_replay.figures", as before the split

#: Published strategies of the CORe50 multi-run TSVs: display name and colour (same as our method's).
REFERENCE_TITLES = {"AR1*": "AR1*", "CWR*": "CWR*", "LWF": "LwF", "NAIVE": "naive", "EWC": "EWC",
                    "AR1*_BN": "AR1* (BN)"}
REFERENCE_COLOURS = {"AR1*": METHOD_COLOURS["ar1"], "CWR*": METHOD_COLOURS["cwr"], "NAIVE": METHOD_COLOURS["naive"],
                     "LWF": "#2ca02c", "EWC": "#9467bd", "AR1*_BN": "#8c564b"}
_EXTRA_COLOURS = ("#bcbd22", "#e377c2", "#17becf", "#8c564b")
#: The published rehearsal-free NICv2 curves shipped with the package (CORe50 multi-run TSVs, CC BY 4.0;
#: source and licence in its README.md): the default of ``latent-replay figures --reference``.
REFERENCE_RESULTS = Path(__file__).resolve().parents[1] / "resources" / "reference_results"


def _reference_colour(strategy: str, i: int) -> str:
    return REFERENCE_COLOURS.get(strategy.upper(), _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)])


def _reference_title(strategy: str) -> str:
    return REFERENCE_TITLES.get(strategy.upper(), strategy)


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
