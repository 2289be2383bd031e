"""Dataset root validation, image decoding, the frame cache and preprocessing values."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from latent_replay.data.core50 import (
    DatasetError, FrameStore, cache_key, load_frames, load_images, open_root, preprocess,
)
from latent_replay.data.filelists import frame_path


def test_open_root_ok(tiny_root):
    ds = open_root(tiny_root)
    assert ds.images_dir == tiny_root.resolve() / "core50_128x128"
    assert ds.class_names()[0] == "plug_adapter1" and len(ds.class_names()) == 50


def test_open_root_errors(tmp_path, tiny_root):
    with pytest.raises(DatasetError, match=r"nothere: dataset root does not exist"):
        open_root(tmp_path / "nothere")
    (tmp_path / "f").write_text("x")
    with pytest.raises(DatasetError, match="is not a folder"):
        open_root(tmp_path / "f")
    (tiny_root / "core50_labels.txt").write_text("a\nb\n")
    with pytest.raises(DatasetError, match=r"core50_labels.txt: 2 object names, expected 50"):
        open_root(tiny_root)
    (tiny_root / "core50_labels.txt").unlink()
    with pytest.raises(DatasetError, match=r"core50_labels.txt: labels file missing"):
        open_root(tiny_root)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "core50_labels.txt").write_text("x\n" * 50)
    with pytest.raises(DatasetError, match=r"core50_128x128: image folder missing"):
        open_root(empty)
    (empty / "core50_128x128").mkdir()
    with pytest.raises(DatasetError, match="no session folders"):
        open_root(empty)


def test_load_images_values_and_errors(tiny_root):
    images = tiny_root / "core50_128x128"
    paths = [frame_path(1, 1, 0), frame_path(3, 6, 2)]
    arr = load_images(images, paths)
    assert arr.shape == (2, 8, 8, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[1], np.asarray(Image.open(images / paths[1])))
    with pytest.raises(DatasetError, match=r"C_01_01_099.png: image not found"):
        load_images(images, [frame_path(1, 1, 0), frame_path(1, 1, 99)])
    (images / frame_path(1, 2, 0)).write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"C_01_02_000.png: cannot decode image"):
        load_images(images, [frame_path(1, 2, 0)])
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / frame_path(1, 2, 1))
    # the message names the frame the size came from: the odd one may be that first frame
    with pytest.raises(DatasetError, match=r"C_01_02_001.png: image is 4x4, expected 8x8 \(the size of "
                                           r".*C_01_01_000.png\)$"):
        load_images(images, [frame_path(1, 1, 0), frame_path(1, 2, 1)])


def test_frame_cache_hit_and_key(tiny_root, tmp_path, caplog):
    images = tiny_root / "core50_128x128"
    paths = [frame_path(s, o, f) for s in (1, 2) for o in (1, 6) for f in range(3)]
    cache = tmp_path / "cache"
    first = load_frames(images, reversed(paths), cache_dir=cache, progress=False)
    assert not first.from_cache and first.paths == tuple(sorted(paths))
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")
    meta = json.loads((cache / files[0]).read_text())
    assert meta["frames"] == 12 and meta["shape"] == [12, 8, 8, 3]
    # a second call (any order of the same frames) is a hit and gives identical pixels
    second = load_frames(images, paths, cache_dir=cache, progress=False)
    assert second.from_cache and second.cache_file == first.cache_file
    want = load_images(images, [paths[5], paths[0]])
    assert np.array_equal(second.get([paths[5], paths[0]]), want)
    assert second.rows([paths[0]]).tolist() == [sorted(paths).index(paths[0])]
    with pytest.raises(KeyError, match="not in this frame store"):
        second.rows([frame_path(9, 1, 0)])
    # another frame set or another root gives another key
    assert cache_key(images, paths) != cache_key(images, paths[:-1])
    assert cache_key(images, paths) != cache_key(tmp_path, paths)
    # a cache file that no longer matches its description is decoded again
    np.save(first.cache_file, np.zeros((3, 8, 8, 3), np.uint8))
    third = load_frames(images, paths, cache_dir=cache, progress=False)
    assert not third.from_cache and np.array_equal(third.get(paths), want_all := load_images(images, paths))
    assert want_all.shape[0] == 12
    assert load_frames(images, paths, use_cache=False, progress=False).cache_file is None
    # a frame file replaced since the cache was written (another download or render into the same
    # folder): the cache is decoded again, with a warning, and serves the new pixels
    assert load_frames(images, paths, cache_dir=cache, progress=False).from_cache
    changed = np.full((8, 8, 3), 200, np.uint8)
    Image.fromarray(changed).save(images / paths[3])
    os.utime(images / paths[3], ns=(1, 1))     # a coarse file system may keep the old time: make it differ
    caplog.clear()
    fourth = load_frames(images, paths, cache_dir=cache, progress=False)
    assert not fourth.from_cache and np.array_equal(fourth.get([paths[3]])[0], changed)
    assert "changed since it was written" in caplog.text
    assert load_frames(images, paths, cache_dir=cache, progress=False).from_cache
    # a cache of an earlier version (no fingerprint) is decoded once more, and says why
    meta_file = cache / files[0]
    meta = json.loads(meta_file.read_text())
    del meta["fingerprint"]
    meta_file.write_text(json.dumps(meta))
    caplog.clear()
    assert not load_frames(images, paths, cache_dir=cache, progress=False).from_cache
    assert "without a fingerprint of its frame files" in caplog.text
    assert load_frames(images, paths, cache_dir=cache, progress=False).from_cache


def test_memory_mapped_store_reads_through_the_file(tmp_path, monkeypatch):
    """A store memory-mapped from a .npy file returns exactly what indexing the array gives, for any
    order, repeats and runs of rows, but reads it with preadv (the mapping's pages are never touched);
    in-memory arrays and views of a mapping keep plain indexing."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (23, 5, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "f.npy", arr)
    mm = np.load(tmp_path / "f.npy", mmap_mode="r")
    paths = tuple(f"p{i:02d}" for i in range(23))
    store = FrameStore(mm, paths)
    import latent_replay.data.core50 as core50

    calls = []
    real = core50.os.preadv
    monkeypatch.setattr(core50.os, "preadv", lambda fd, bufs, pos: calls.append(pos) or real(fd, bufs, pos))
    for rows in ([3, 4, 5, 6], [22, 0, 7, 7, 8, 1], [], list(range(23))[::-1], [12]):
        got = store.get([paths[i] for i in rows])
        assert got.dtype == np.uint8 and got.flags.c_contiguous and not isinstance(got, np.memmap)
        assert np.array_equal(got, arr[rows]), rows
    # one read per run of consecutive rows: [3..6] -> 1; sorted [0,1][7][7,8][22] -> 4; all -> 1; one -> 1
    row_bytes = arr[0].nbytes
    assert calls[0] == mm.offset + 3 * row_bytes and len(calls) == 1 + 4 + 1 + 1
    calls.clear()
    # the file opened with the store is read even after the cache file is deleted or replaced
    (tmp_path / "f.npy").unlink()
    np.save(tmp_path / "f.npy", np.zeros_like(arr))
    assert np.array_equal(store.get([paths[4], paths[9]]), arr[[4, 9]])
    calls.clear()
    assert np.array_equal(FrameStore(np.array(arr), paths).get([paths[2]]), arr[[2]])
    assert np.array_equal(FrameStore(mm[1:], paths[1:]).get([paths[2]]), arr[[2]])   # a view: indexing
    assert calls == []


def test_preprocess_caffe_values():
    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 200, 100, 50  # R, G, B
    x = preprocess(img, "caffe")
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    # channel 0 = B - 104, channel 1 = G - 117, channel 2 = R - 123
    assert x[0, :, 0, 0].tolist() == [50 - 104, 100 - 117, 200 - 123]


def test_preprocess_imagenet_values_and_layout():
    img = np.full((2, 3, 3, 3), 255, np.uint8)
    x = preprocess(torch.from_numpy(img), "imagenet", channels_last=True)
    want = [(1 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    assert torch.allclose(x[1, :, 2, 2], torch.tensor(want))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="preprocessing must be one of caffe, imagenet"):
        preprocess(img, "bgr")
    with pytest.raises(ValueError, match=r"expected uint8 frames of shape \(N, H, W, 3\)"):
        preprocess(img.astype(np.float32), "caffe")
