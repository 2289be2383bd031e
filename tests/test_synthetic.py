"""Tests for latent_replay.data.synthetic: the synthetic CORe50 writer."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latent_replay.data import synthetic
from latent_replay.data.classes import CORE50_CLASS_NAMES, IMAGES_DIR, LABELS_FILE
from latent_replay.data.synthetic import (
    INFO_FILE,
    SyntheticInfo,
    image_path,
    load_synthetic_info,
    write_synthetic_core50,
)

TINY = dict(sessions=2, categories=2, objects_per_category=2, frames=3, size=32, progress=False)


def _files(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, session: int, obj: int, frame: int) -> np.ndarray:
    return np.asarray(Image.open(root / image_path(session, obj, frame)), dtype=np.float32) / 255


# ------------------------------------------------------------------------------ layout & files
def test_exact_layout_labels_and_metadata(tmp_path):
    out = tmp_path / "core50"
    info = write_synthetic_core50(out, **TINY)

    assert info == SyntheticInfo(out, (1, 2), (1, 2, 6, 7), 3, 32, 0, 24)
    expected = {LABELS_FILE, INFO_FILE} | {
        f"{IMAGES_DIR}/s{s}/o{o}/C_{s:02d}_{o:02d}_{f:03d}.png"
        for s in (1, 2) for o in (1, 2, 6, 7) for f in range(3)}
    assert set(_files(out)) == expected
    assert (out / "core50_128x128/s2/o7/C_02_07_002.png").is_file()
    assert image_path(3, 12, 7) == Path("core50_128x128/s3/o12/C_03_12_007.png")

    labels = (out / LABELS_FILE).read_text()
    assert labels.endswith("\n") and labels.splitlines() == list(CORE50_CLASS_NAMES)
    assert len(labels.splitlines()) == 50

    meta = json.loads((out / INFO_FILE).read_text())
    assert meta["sessions"] == [1, 2] and meta["objects"] == [1, 2, 6, 7]
    assert (meta["frames"], meta["size"], meta["seed"], meta["n_images"]) == (3, 32, 0, 24)
    assert load_synthetic_info(out) == info
    assert [p.name for p in tmp_path.iterdir()] == ["core50"]  # no staging folder left behind


def test_object_ids_follow_core50_numbering(tmp_path):
    info = write_synthetic_core50(tmp_path / "d", sessions=1, categories=10, objects_per_category=2,
                                  frames=1, size=16, progress=False)
    assert info.objects == (1, 2, 6, 7, 11, 12, 16, 17, 21, 22, 26, 27, 31, 32, 36, 37, 41, 42, 46, 47)
    assert info.n_images == 20


def test_images_are_rgb_of_requested_size_in_core50_folder(tmp_path):
    out = tmp_path / "d"
    write_synthetic_core50(out, sessions=1, categories=1, objects_per_category=1, frames=2, size=40,
                           progress=False)
    for frame in range(2):
        with Image.open(out / image_path(1, 1, frame)) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (40, 40)


# ------------------------------------------------------------------------------ determinism
def test_deterministic_across_runs_and_worker_counts(tmp_path):
    a = write_synthetic_core50(tmp_path / "a", workers=1, **TINY)
    b = write_synthetic_core50(tmp_path / "b", workers=3, **TINY)
    assert _files(a.out_dir) == _files(b.out_dir)


def test_seed_changes_every_image(tmp_path):
    a = _files(write_synthetic_core50(tmp_path / "a", seed=0, **TINY).out_dir)
    b = _files(write_synthetic_core50(tmp_path / "b", seed=1, **TINY).out_dir)
    pngs = [k for k in a if k.endswith(".png")]
    assert all(a[k] != b[k] for k in pngs)
    assert a[LABELS_FILE] == b[LABELS_FILE]


# ------------------------------------------------------------------------------ arguments & folders
@pytest.mark.parametrize("name, value, allowed", [
    ("sessions", 0, "[1, 11]"), ("sessions", 12, "[1, 11]"), ("sessions", 2.0, "[1, 11]"),
    ("categories", 0, "[1, 10]"), ("categories", 11, "[1, 10]"),
    ("objects_per_category", 0, "[1, 5]"), ("objects_per_category", 6, "[1, 5]"),
    ("frames", 0, "[1, 999]"), ("frames", 1000, "[1, 999]"), ("frames", True, "[1, 999]"),
    ("size", 15, ">= 16"), ("seed", -1, ">= 0"), ("workers", 0, ">= 1"),
])
def test_invalid_arguments_raise_value_error_naming_them(tmp_path, name, value, allowed):
    with pytest.raises(ValueError) as err:
        write_synthetic_core50(tmp_path / "d", **{**TINY, name: value})
    message = str(err.value)
    assert message.startswith(f"{name} ") and allowed in message and "\n" not in message
    assert not (tmp_path / "d").exists()


def test_same_parameters_again_is_a_no_op(tmp_path, monkeypatch):
    out = tmp_path / "d"
    first = write_synthetic_core50(out, **TINY)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("must not render again")

    monkeypatch.setattr(synthetic, "_write_video", fail)
    assert write_synthetic_core50(out, **TINY) == first
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_existing_empty_folder_is_used(tmp_path):
    (tmp_path / "d").mkdir()
    write_synthetic_core50(tmp_path / "d", **TINY)
    assert load_synthetic_info(tmp_path / "d") is not None


def test_refuses_foreign_non_empty_folder(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(out)) as err:
        write_synthetic_core50(out, **TINY)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_refuses_synthetic_dataset_with_other_parameters(tmp_path):
    out = tmp_path / "d"
    write_synthetic_core50(out, **TINY)
    snapshot = _files(out)
    with pytest.raises(FileExistsError, match=str(out)):
        write_synthetic_core50(out, **{**TINY, "frames": 4})
    assert _files(out) == snapshot


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real = synthetic._write_video

    def flaky(root, seed, session, obj, frames, size):
        if session == 2:
            raise KeyboardInterrupt
        return real(root, seed, session, obj, frames, size)

    monkeypatch.setattr(synthetic, "_write_video", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_core50(tmp_path / "d", workers=2, **TINY)
    assert list(tmp_path.iterdir()) == []  # neither out_dir nor a staging folder
    monkeypatch.setattr(synthetic, "_write_video", real)
    assert write_synthetic_core50(tmp_path / "d", **TINY).n_images == 24


def test_a_killed_writers_staging_folder_is_removed_and_a_live_ones_kept(tmp_path):
    """SIGKILL leaves no chance to clean up: the next call removes staging folders of dead processes."""
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".d.partial-{dead}-0000aaaa" / "s1").mkdir(parents=True)
    alive = tmp_path / f".d.partial-{os.getpid()}-0000bbbb"
    alive.mkdir()
    other = tmp_path / ".e.partial-1-0000cccc"     # another dataset's folder
    other.mkdir()
    write_synthetic_core50(tmp_path / "d", **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["d", alive.name, other.name])


# ------------------------------------------------------------------------------ content
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """6 sessions x 20 objects (2 per category) x 4 frames of 32x32, loaded as float arrays."""
    info = write_synthetic_core50(tmp_path_factory.mktemp("syn") / "core50", sessions=6,
                                  categories=10, objects_per_category=2, frames=4, size=32,
                                  progress=False)
    videos = {(s, o): np.stack([_load(info.out_dir, s, o, f) for f in range(info.frames)])
              for s in info.sessions for o in info.objects}
    return info, videos


def test_sessions_differ_more_than_frames_of_one_video(dataset):
    info, videos = dataset
    for obj in info.objects[:4]:
        vids = [videos[s, obj].astype(np.float32) for s in info.sessions]
        within = np.mean([np.abs(v[:, None] - v[None, :]).mean() for v in vids])
        across = np.mean([np.abs(a[:, None] - b[None, :]).mean() for i, a in enumerate(vids) for b in vids[i + 1:]])
        steps = np.mean([np.abs(np.diff(v, axis=0)).mean() for v in vids])
        assert steps > 0.005  # the object moves and the sensor is noisy: frames are not copies
        assert across > 1.3 * within  # a new session is a real shift (background, light, pose)
    # The backgrounds themselves differ: mean colour of the image border per session.
    border = [np.mean([np.concatenate([v[:, 0], v[:, -1]], 1).mean((0, 1))
                       for (s, _), v in videos.items() if s == session], 0) for session in info.sessions]
    assert min(np.abs(a - b).max() for i, a in enumerate(border) for b in border[i + 1:]) > 0.02


def test_same_category_objects_look_more_alike(dataset):
    info, videos = dataset
    mean = {o: np.concatenate([videos[s, o] for s in info.sessions]).mean(0) for o in info.objects}
    pairs = [(a, b) for i, a in enumerate(info.objects) for b in info.objects[i + 1:]]
    dist = {(a, b): np.linalg.norm(mean[a] - mean[b]) for a, b in pairs}
    within = [d for (a, b), d in dist.items() if (a - 1) // 5 == (b - 1) // 5]
    between = [d for (a, b), d in dist.items() if (a - 1) // 5 != (b - 1) // 5]
    assert len(within) == 10 and np.mean(within) < 0.9 * np.mean(between)


def _features(video: np.ndarray) -> np.ndarray:
    """16x16 downsampled pixels, standardised per image and channel (removes global lighting)."""
    x = video.reshape(len(video), 16, 2, 16, 2, 3).mean((2, 4))
    x = (x - x.mean((1, 2), keepdims=True)) / (x.std((1, 2), keepdims=True) + 0.02)
    return x.reshape(len(video), -1)


def test_objects_are_learnable_across_sessions_but_not_trivially(dataset):
    from sklearn.linear_model import LogisticRegression

    info, videos = dataset

    def split(sessions, frames=slice(None)):
        x = np.concatenate([_features(videos[s, o][frames]) for s in sessions for o in info.objects])
        y = np.concatenate([[o] * len(videos[s, o][frames]) for s in sessions for o in info.objects])
        return x, y

    chance = 1 / len(info.objects)
    model = LogisticRegression(max_iter=2000).fit(*split((1, 2, 4, 5, 6)))
    new_session = model.score(*split((3,)))
    assert new_session > 3 * chance  # learnable: generalises to an unseen session ...
    assert new_session < 0.9         # ... but the new-instance shift is real
    # Within a session (other frames of the same videos) the task is easy: the gap is the shift.
    same_session = LogisticRegression(max_iter=2000).fit(*split((1,), slice(0, None, 2)))
    assert same_session.score(*split((1,), slice(1, None, 2))) > new_session
