"""A NICv2-391-shaped stream of synthetic CORe50 frames for the benchmarks, rendered in memory.

The benchmarks need exact sizes (a first batch that fills a 1500-pattern memory, incremental batches
of 300 new frames, a 2,249-frame test list) rather than a whole synthetic CORe50 on disk, so this
module renders just those frames with the synthetic CORe50 renderer
(:func:`latent_replay.data.synthetic.render_video`, the same learnable objects, sessions and videos as
``latent-replay synth``) and writes them, once, as one uint8 ``.npy`` array plus a JSON index:

* batch 0: session 1 of the ten NICv2 batch-0 objects (1, 6, ..., 46), ``first_frames`` frames each,
  in path order (as NICv2 batch 0);
* each incremental batch: one (session, object) video of ``new_frames`` frames from a training session
  (2, 4, 5, 6, 8, 9, 11) of one of those objects, frames shuffled (as NICv2-391); with ``objects=50``
  the videos of all 50 objects in sessions 1, 2, 4, 5, 6, 8, 9, 11 except batch 0's, i.e. the 390
  videos of the full NICv2-391 (``bench/full_run.py``);
* test list: sessions 3, 7, 10 of the same objects, sessions in that order and paths sorted within a
  session (as the NICv2 test list), cut to ``test_frames`` frames.

Frame ``i`` of a video with ``n`` frames samples the 15 s CORe50 video evenly (the renderer's rule), so
300 frames are a full-length video. Everything is seeded: the same spec gives the same bytes.

:func:`materialise` writes ``frames.npy`` + ``stream.json``; :func:`load_stream` reads them back as the
suite's own objects (a memory-mapped :class:`~latent_replay.data.core50.FrameStore` and a
:class:`~latent_replay.data.nicv2.Scenario`), the way the trainer gets them from its frame cache.
The Avalanche worker of ``compare_avalanche.py`` reads the same two files with numpy and json only.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FIRST_OBJECTS = tuple(range(1, 51, 5))          # NICv2 batch 0: one object per category
TRAIN_SESSIONS = (2, 4, 5, 6, 8, 9, 11)         # training sessions besides session 1 (batch 0's)
TEST_SESSIONS = (3, 7, 10)
FRAMES_FILE, INDEX_FILE = "frames.npy", "stream.json"


@dataclass(frozen=True)
class StreamSpec:
    """Sizes of the benchmark stream (defaults: NICv2-391 shapes with M = 1500)."""

    size: int = 128                  # frame side (CORe50: 128)
    first_frames: int = 150          # per batch-0 object; 10 objects -> 1500 frames (fills M = 1500)
    new_frames: int = 300            # per incremental batch (one video; CORe50 videos have ~300)
    incremental_batches: int = 1
    test_frames: int = 2249          # the reduced NICv2 test list
    seed: int = 0
    objects: int = 10                # 10: the batch-0 objects only; 50: all of CORe50 (the full NICv2-391)

    def key(self) -> str:
        return "-".join(f"{k}{v}" for k, v in asdict(self).items())


def frame_path(session: int, obj: int, frame: int) -> str:
    """CORe50 path relative to ``core50_128x128`` (what the filelists hold)."""
    return f"s{session}/o{obj}/C_{session:02d}_{obj:02d}_{frame:03d}.png"


def _video(spec: StreamSpec, session: int, obj: int, frames: int) -> tuple[list[str], np.ndarray]:
    from latent_replay.data.synthetic import render_video

    images = np.stack(list(render_video(spec.seed, session, obj, frames, spec.size)))
    return [frame_path(session, obj, f) for f in range(frames)], images


def _objects(spec: StreamSpec) -> list[int]:
    """The batch-0 objects first, then as many others as ``spec.objects`` asks for."""
    if not len(FIRST_OBJECTS) <= spec.objects <= 50:
        raise ValueError(f"objects must be in {len(FIRST_OBJECTS)}..50, got {spec.objects}")
    others = [o for o in range(1, 51) if o not in FIRST_OBJECTS]
    return list(FIRST_OBJECTS) + others[:spec.objects - len(FIRST_OBJECTS)]


def _incremental_videos(spec: StreamSpec) -> list[tuple[int, int]]:
    """The (session, object) videos of the training sessions not in batch 0 (NICv2: 390 of 400 for all
    50 objects), in a seeded order."""
    videos = [(s, o) for s in (1, *TRAIN_SESSIONS) for o in _objects(spec) if not (s == 1 and o in FIRST_OBJECTS)]
    order = np.random.default_rng([spec.seed, 391]).permutation(len(videos))
    if spec.incremental_batches > len(videos):
        raise ValueError(f"at most {len(videos)} incremental batches, got {spec.incremental_batches}")
    return [videos[i] for i in order[:spec.incremental_batches]]


def render_stream(spec: StreamSpec) -> tuple[np.ndarray, dict]:
    """(frames (N, H, W, 3) uint8, index) where index holds the batches and the test list as
    ``{"paths": [...], "labels": [...], "rows": [...]}`` (rows into the frame array)."""
    if not 1 <= spec.new_frames <= 999 or not 1 <= spec.first_frames <= 999:
        raise ValueError("first_frames and new_frames must be in 1..999 (CORe50 frame numbers)")
    chunks, all_paths = [], []

    def add(paths, images):
        start = len(all_paths)
        all_paths.extend(paths)
        chunks.append(images)
        return list(range(start, start + len(paths)))

    batches = []
    paths0, rows0 = [], []
    for o in FIRST_OBJECTS:
        p, im = _video(spec, 1, o, spec.first_frames)
        paths0 += p
        rows0 += add(p, im)
    order = np.argsort(paths0, kind="stable")                     # batch 0: path order
    batches.append(([paths0[i] for i in order], [rows0[i] for i in order]))
    for b, (s, o) in enumerate(_incremental_videos(spec), start=1):
        p, im = _video(spec, s, o, spec.new_frames)
        rows = add(p, im)
        shuffle = np.random.default_rng([spec.seed, 0, 391, b]).permutation(len(p))   # NICv2: shuffled
        batches.append(([p[i] for i in shuffle], [rows[i] for i in shuffle]))
    per_video = math.ceil(spec.test_frames / (len(TEST_SESSIONS) * spec.objects))
    test_paths, test_rows = [], []
    for s in TEST_SESSIONS:
        sp, sr = [], []
        for o in _objects(spec):
            p, im = _video(spec, s, o, per_video)
            sp += p
            sr += add(p, im)
        order = np.argsort(sp, kind="stable")
        test_paths += [sp[i] for i in order]
        test_rows += [sr[i] for i in order]
    test = (test_paths[:spec.test_frames], test_rows[:spec.test_frames])

    def entry(paths, rows):
        return {"paths": paths, "rows": rows, "labels": [int(p.split("/")[1][1:]) - 1 for p in paths]}

    index = {"spec": asdict(spec), "batches": [entry(*b) for b in batches], "test": entry(*test)}
    return np.concatenate(chunks), index


def materialise(spec: StreamSpec, out_dir: str | os.PathLike) -> Path:
    """Render the stream into ``out_dir/<spec key>/`` once (``frames.npy``, ``stream.json``); return it."""
    folder = Path(out_dir) / spec.key()
    if (folder / INDEX_FILE).is_file() and (folder / FRAMES_FILE).is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    frames, index = render_stream(spec)
    tmp = folder / (FRAMES_FILE + ".tmp.npy")
    np.save(tmp, frames)
    os.replace(tmp, folder / FRAMES_FILE)
    (folder / (INDEX_FILE + ".tmp")).write_text(json.dumps(index))
    os.replace(folder / (INDEX_FILE + ".tmp"), folder / INDEX_FILE)   # the index is written last
    return folder


def load_index(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / INDEX_FILE).read_text())


def load_stream(folder: str | os.PathLike, batches: int | None = None):
    """(FrameStore, Scenario) of a materialised stream (first ``batches`` batches; default all)."""
    from latent_replay.data.core50 import FrameStore
    from latent_replay.data.filelists import Filelist
    from latent_replay.data.nicv2 import Scenario

    folder = Path(folder)
    index = load_index(folder)
    frames = np.load(folder / FRAMES_FILE, mmap_mode="r")       # like the suite's frame cache
    all_paths = [""] * len(frames)
    for e in (*index["batches"], index["test"]):
        for p, r in zip(e["paths"], e["rows"]):
            all_paths[r] = p
    store = FrameStore(frames, tuple(all_paths), folder / FRAMES_FILE, from_cache=True)

    def fl(e, name):
        return Filelist(tuple(e["paths"]), np.asarray(e["labels"], dtype=np.int64), name)

    chosen = index["batches"] if batches is None else index["batches"][:batches]
    scenario = Scenario(391, 0, tuple(fl(e, f"batch {i}") for i, e in enumerate(chosen)),
                        fl(index["test"], "test"), str(folder))
    return store, scenario
