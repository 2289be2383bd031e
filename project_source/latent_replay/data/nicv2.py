"""NICv2 scenarios: load them from filelists, or generate them from the frames of a dataset root.

Protocol facts (spec §3.3, read off the official filelists):

* batch 0 = session 1 of one object per category (objects 1, 6, ..., 46), frames sorted by path;
  identical in every run and scenario;
* the other (session, object) videos of the training sessions {1, 2, 4, 5, 6, 8, 9, 11} (390 on the
  full dataset) are put in a per-run random order and grouped 5 / 2 / 1 per batch for NICv2-79 / 196 /
  391; the frames of each later batch are shuffled;
* test = sessions {3, 7, 10}: sessions in that order, paths sorted within a session; the reduced test
  list keeps every 20th line of it.

The generator seeds the video order with ``(seed, run)`` only, so the three scenarios of one run share
it (NICv2-79 run r is NICv2-391 run r grouped by five); frame shuffles are seeded with
``(seed, run, scenario, batch)``. On a partial dataset (the synthetic demo) the same rules give fewer
videos and so fewer batches; the last batch may then hold fewer videos than the others.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .classes import FIRST_BATCH_OBJECTS, FIRST_BATCH_SESSION, TEST_SESSIONS, TRAIN_SESSIONS
from .filelists import (
    REDUCED_STEP, SCENARIOS, TEST_FULL, TEST_REDUCED, Filelist, FilelistError, PathIndex, batch_files,
    find_scenario_dir, parse_frame_path, read_filelist, read_test_list, write_filelist,
)

log = logging.getLogger(__name__)

#: Videos per later batch in each scenario.
VIDEOS_PER_BATCH = {79: 5, 196: 2, 391: 1}

Inventory = Mapping[tuple[int, int], Sequence[str]]


def inventory_from_paths(paths: Iterable[str]) -> dict[tuple[int, int], list[str]]:
    """Group frame paths by (session, object) video; each video's paths sorted."""
    videos: dict[tuple[int, int], list[str]] = defaultdict(list)
    for p in paths:
        parsed = parse_frame_path(p)
        if parsed is None:
            raise FilelistError(f"{p}: not a CORe50 frame path")
        videos[parsed[:2]].append(p)
    return {k: sorted(v) for k, v in sorted(videos.items())}


def inventory_from_root(images_dir: str | os.PathLike) -> dict[tuple[int, int], list[str]]:
    """All frames present under a ``core50_128x128`` folder, grouped by video."""
    images_dir = Path(images_dir)
    paths = []
    for s_entry in sorted(os.scandir(images_dir), key=lambda e: e.name):
        if not (s_entry.is_dir() and s_entry.name.startswith("s")):
            continue
        for o_entry in sorted(os.scandir(s_entry.path), key=lambda e: e.name):
            if not (o_entry.is_dir() and o_entry.name.startswith("o")):
                continue
            for f in os.scandir(o_entry.path):
                rel = f"{s_entry.name}/{o_entry.name}/{f.name}"
                if parse_frame_path(rel) is not None:
                    paths.append(rel)
    if not paths:
        raise FilelistError(f"{images_dir}: no CORe50 frames (s<S>/o<O>/C_<SS>_<OO>_<FFF>.png) found")
    return inventory_from_paths(paths)


def _filelist(paths: Sequence[str], source: str) -> Filelist:
    labels = np.fromiter((parse_frame_path(p)[1] - 1 for p in paths), dtype=np.int64, count=len(paths))
    return Filelist(tuple(paths), labels, source)


def make_nicv2(inventory: Inventory, scenario: int, run: int, seed: int = 0) -> list[Filelist]:
    """The train batches of NICv2-``scenario`` run ``run`` built from the videos in ``inventory``."""
    if scenario not in VIDEOS_PER_BATCH:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario}")
    first = [(FIRST_BATCH_SESSION, o) for o in FIRST_BATCH_OBJECTS if (FIRST_BATCH_SESSION, o) in inventory]
    if not first:
        raise FilelistError(
            f"no frames of session {FIRST_BATCH_SESSION} for any of objects {list(FIRST_BATCH_OBJECTS)}: "
            "cannot build batch 0"
        )
    first_set = set(first)
    later = sorted(k for k in inventory if k[0] in TRAIN_SESSIONS and k not in first_set)
    if not later:
        raise FilelistError("no training videos besides batch 0 (sessions 1, 2, 4, 5, 6, 8, 9, 11)")
    order = np.random.default_rng([seed, run]).permutation(len(later))
    per = VIDEOS_PER_BATCH[scenario]
    batches = [_filelist(sorted(p for v in first for p in inventory[v]), "batch 0")]
    for b in range(math.ceil(len(later) / per)):
        videos = [later[i] for i in order[b * per:(b + 1) * per]]
        paths = [p for v in videos for p in inventory[v]]
        shuffle = np.random.default_rng([seed, run, scenario, b + 1]).permutation(len(paths))
        batches.append(_filelist([paths[i] for i in shuffle], f"batch {b + 1}"))
    return batches


def make_test(inventory: Inventory) -> Filelist:
    """The full test list: sessions 3, 7, 10 in that order, paths sorted within a session."""
    paths = []
    for s in TEST_SESSIONS:
        paths += sorted(p for (sess, _), v in inventory.items() if sess == s for p in v)
    if not paths:
        raise FilelistError("no frames of the test sessions 3, 7, 10")
    return _filelist(paths, "test")


def batch_file_name(index: int) -> str:
    """``train_batch_<XX>_filelist.txt`` with the index padded to at least two digits."""
    return f"train_batch_{index:02d}_filelist.txt"


def write_nicv2(out_root: str | os.PathLike, inventory: Inventory, scenarios: Sequence[int] = SCENARIOS,
                runs: Sequence[int] = range(10), seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``NICv2_<S>/run<R>/train_batch_<XX>_filelist.txt`` plus both test lists under ``out_root``.

    Everything is written into a temporary folder first and then moved into place, so a failure never
    leaves a half-written scenario. Existing scenario folders or test lists are replaced only with
    ``overwrite``; otherwise a FileExistsError names the first one.
    """
    out_root = Path(out_root)
    targets = [f"NICv2_{s}" for s in scenarios] + [TEST_FULL, TEST_REDUCED]
    if not overwrite:
        for name in targets:
            if (out_root / name).exists():
                raise FileExistsError(f"{out_root / name} already exists (use --force to replace it)")
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".nicv2-", dir=out_root))
    try:
        for scenario in scenarios:
            for run in runs:
                run_dir = tmp / f"NICv2_{scenario}" / f"run{run}"
                for i, fl in enumerate(make_nicv2(inventory, scenario, run, seed)):
                    write_filelist(run_dir / batch_file_name(i), fl.paths, fl.labels)
        test = make_test(inventory)
        write_filelist(tmp / TEST_FULL, test.paths, test.labels)
        reduced = test.every(REDUCED_STEP)
        write_filelist(tmp / TEST_REDUCED, reduced.paths, reduced.labels)
        # move every old target aside first (renames), putting back those moved if one fails, so a
        # failure leaves all old lists in place; only then move the new ones in
        old = tmp / ".old"
        old.mkdir()
        moved = []
        try:
            for name in targets:
                if (out_root / name).exists() or (out_root / name).is_symlink():
                    os.replace(out_root / name, old / name)
                    moved.append(name)
        except OSError:
            for name in moved:
                os.replace(old / name, out_root / name)
            raise
        for name in targets:
            os.replace(tmp / name, out_root / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp.exists():
            log.warning("could not remove the temporary folder %s (it holds the replaced lists)", tmp)
    log.info("wrote NICv2-%s runs %s under %s", "/".join(map(str, scenarios)), list(runs), out_root)
    return out_root


@dataclass(frozen=True)
class BatchSummary:
    index: int
    frames: int
    classes: tuple[int, ...]
    new_classes: tuple[int, ...]


@dataclass(frozen=True)
class Scenario:
    """One NICv2 run: ordered train batches and the test list."""

    scenario: int
    run: int
    batches: tuple[Filelist, ...]
    test: Filelist
    source: str

    @property
    def name(self) -> str:
        return f"NICv2-{self.scenario}"

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def train_frames(self) -> int:
        return sum(len(b) for b in self.batches)

    def overlaps(self) -> list[str]:
        """Frames listed twice in the run's train batches, or both for training and for testing (the
        official lists have neither); one message per frame, first ones first."""
        where: dict[str, int] = {}
        found = []
        for i, b in enumerate(self.batches):
            for p in b.paths:
                if p in where:
                    found.append(f"{p} is in train batch {where[p]} and in train batch {i}")
                else:
                    where[p] = i
        found += [f"{p} is in train batch {where[p]} and in the test list" for p in self.test.paths if p in where]
        return found

    def summary(self) -> list[BatchSummary]:
        """Frames, classes and newly introduced classes per batch."""
        seen: set[int] = set()
        rows = []
        for i, b in enumerate(self.batches):
            classes = b.classes
            new = tuple(c for c in classes if c not in seen)
            seen.update(classes)
            rows.append(BatchSummary(i, len(b), classes, new))
        return rows

    def check_frames(self, images_dir: str | os.PathLike) -> None:
        """Check once that every train and test frame exists under ``images_dir`` (one error naming it)."""
        index = PathIndex(Path(images_dir))
        for fl in (*self.batches, self.test):
            index.check(fl)


def load_scenario(filelists_root: str | os.PathLike, scenario: int, run: int, *, reduced_test: bool = True,
                  images_dir: str | os.PathLike | None = None) -> Scenario:
    """Read NICv2-``scenario`` run ``run`` from a filelists folder (any accepted naming).

    With ``images_dir``, every frame is checked to exist there (once, fast).
    """
    if scenario not in VIDEOS_PER_BATCH:
        raise FilelistError(f"scenario must be one of {', '.join(map(str, SCENARIOS))}, got {scenario}")
    run_dir = find_scenario_dir(filelists_root, scenario, run)
    batches = tuple(read_filelist(f) for f in batch_files(run_dir))
    test = read_test_list(filelists_root, run_dir, reduced_test)
    sc = Scenario(scenario, run, batches, test, str(run_dir))
    if images_dir is not None:
        sc.check_frames(images_dir)
    log.debug("loaded %s run %d from %s: %d batches, %d frames", sc.name, run, run_dir, len(sc), sc.train_frames)
    return sc
