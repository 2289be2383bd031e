"""CORe50 dataset root, image decoding, the decoded-frame cache and preprocessing.

A dataset root holds ``core50_labels.txt`` (50 object names) and
``core50_128x128/s<1..11>/o<1..50>/C_<ss>_<oo>_<fff>.png``. :func:`open_root` checks that up front.

Frames are decoded once into a uint8 array (N, H, W, 3, RGB) stored on disk under a cache folder and
memory-mapped afterwards; the key is the dataset root and the set of frames, so every run of every
scenario that uses the same frames shares one decode. Preprocessing happens per minibatch on the
device (:func:`preprocess`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import mmap
import os
import tempfile
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .classes import IMAGES_DIR, LABELS_FILE, NUM_CLASSES
from ..utils import pread_into
from .filelists import atomic_write_text

log = logging.getLogger(__name__)

#: Per-channel means of the Caffe pipeline, in BGR order (B 104, G 117, R 123), 0..255 scale.
CAFFE_BGR_MEANS = (104.0, 117.0, 123.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSING_MODES = ("caffe", "imagenet")
CACHE_FORMAT = 1


class DatasetError(ValueError):
    """The dataset root or one of its files is missing or unreadable; the message names it."""


@dataclass(frozen=True)
class Core50Root:
    """A validated CORe50 dataset root."""

    root: Path

    @property
    def labels_file(self) -> Path:
        return self.root / LABELS_FILE

    @property
    def images_dir(self) -> Path:
        return self.root / IMAGES_DIR

    def class_names(self) -> list[str]:
        return [ln.strip() for ln in self.labels_file.read_text(encoding="utf-8").splitlines() if ln.strip()]


def open_root(path: str | os.PathLike) -> Core50Root:
    """Validate a dataset root and return it; a missing piece raises a one-line DatasetError naming it."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: dataset root does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a folder")
    ds = Core50Root(root.resolve())
    if not ds.labels_file.is_file():
        raise DatasetError(f"{ds.labels_file}: labels file missing (expected {NUM_CLASSES} object names)")
    try:
        names = ds.class_names()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{ds.labels_file}: cannot read labels file ({exc})") from None
    if len(names) != NUM_CLASSES:
        raise DatasetError(f"{ds.labels_file}: {len(names)} object names, expected {NUM_CLASSES}")
    if not ds.images_dir.is_dir():
        raise DatasetError(f"{ds.images_dir}: image folder missing (expected {IMAGES_DIR}/s<S>/o<O>/*.png)")
    if not any(e.is_dir() and e.name.startswith("s") for e in os.scandir(ds.images_dir)):
        raise DatasetError(f"{ds.images_dir}: no session folders s1..s11")
    return ds


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: image not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from None


def decode_into(out: np.ndarray, images_dir: Path, paths: Sequence[str], *, workers: int | None = None,
                progress: bool = True, desc: str = "decoding frames", size_from: str | None = None) -> None:
    """Decode ``paths`` (relative to ``images_dir``) into the preallocated uint8 array ``out`` (N,H,W,3).
    ``size_from``: the frame the expected size was taken from (named when another frame differs).

    Pillow releases the GIL while inflating PNG data, so threads decode in parallel.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    expected = out.shape[1:]
    like = f" (the size of {size_from})" if size_from else ""

    def work(i: int) -> None:
        img = _decode(images_dir / paths[i])
        if img.shape != expected:
            raise DatasetError(f"{images_dir / paths[i]}: image is {img.shape[1]}x{img.shape[0]}, "
                               f"expected {expected[1]}x{expected[0]}{like}")
        out[i] = img

    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        chunk = 256
        for start in range(0, len(paths), chunk):
            for _ in pool.map(work, range(start, min(start + chunk, len(paths)))):
                pass
            bar.update(min(chunk, len(paths) - start))


def load_images(images_dir: str | os.PathLike, paths: Sequence[str], *, workers: int | None = None,
                progress: bool = False) -> np.ndarray:
    """Decode frames into a new uint8 array (N, H, W, 3), RGB, without caching."""
    images_dir = Path(images_dir)
    if not paths:
        raise ValueError("no frames to load")
    first = _decode(images_dir / paths[0])
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)
    decode_into(out, images_dir, paths, workers=workers, progress=progress, size_from=str(images_dir / paths[0]))
    return out


def default_cache_dir() -> Path:
    """``$LATENT_REPLAY_CACHE``, else ``$XDG_CACHE_HOME/latent-replay``, else ``~/.cache/latent-replay``."""
    env = os.environ.get("LATENT_REPLAY_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "latent-replay"


@dataclass
class FrameStore:
    """Decoded frames of a set of paths: a (N, H, W, 3) uint8 array and a path → row index."""

    images: np.ndarray
    paths: tuple[str, ...]
    cache_file: Path | None = None
    from_cache: bool = False

    def __post_init__(self):
        self._row = {p: i for i, p in enumerate(self.paths)}
        # the file of a memory-mapped store is opened once, now: reads then come from the very file
        # that is mapped, even if the cache file is deleted or replaced under its name meanwhile
        self._fd = None
        if _file_backed(self.images):
            try:
                fd = os.open(self.images.filename, os.O_RDONLY)
            except OSError:
                return                      # gone already: the mapping still serves reads
            if os.fstat(fd).st_size >= self.images.offset + self.images.nbytes:
                self._fd = fd
                weakref.finalize(self, os.close, fd)
            else:
                os.close(fd)

    def rows(self, paths: Iterable[str]) -> np.ndarray:
        """Row indices of ``paths`` in :attr:`images`."""
        try:
            return np.fromiter((self._row[p] for p in paths), dtype=np.int64)
        except KeyError as exc:
            raise KeyError(f"frame {exc.args[0]} is not in this frame store") from None

    def get(self, paths: Iterable[str]) -> np.ndarray:
        """The frames of ``paths`` as a new uint8 array, in the given order.

        A store memory-mapped from its cache file is read through the file (``pread``), not through
        the mapping: the pages then stay in the kernel's page cache instead of joining this process's
        resident set, which otherwise grows by every frame a run has touched (about 6 GB over a full
        NICv2-391 run at 128x128)."""
        rows = self.rows(paths)
        if self._fd is not None:
            return _read_rows(self.images, rows, self._fd)
        return np.ascontiguousarray(self.images[rows])

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes)


def _file_backed(images: np.ndarray) -> bool:
    """Whether ``images`` is a whole C-ordered array memory-mapped from a file (``np.load(mmap_mode=)``
    or ``np.memmap``), so row ``i`` is at byte ``offset + i * row_bytes`` of ``images.filename``.
    Views of such an array are not (their ``offset`` attribute is the parent's)."""
    return (isinstance(images, np.memmap) and isinstance(images.base, mmap.mmap)
            and images.filename is not None and images.flags.c_contiguous and images.ndim >= 1)


def _read_rows(images: np.memmap, rows: np.ndarray, fd: int) -> np.ndarray:
    """``images[rows]`` read from ``fd`` (the mapped file) with ``preadv`` straight into the result, one
    call per run of consecutive rows (a batch is usually one or a few runs)."""
    out = np.empty((len(rows),) + images.shape[1:], dtype=images.dtype)
    if not len(rows):
        return out
    if np.any((rows < 0) | (rows >= len(images))):
        raise IndexError(f"{images.filename}: row out of range 0..{len(images) - 1}")
    row_bytes = out[0].nbytes
    order = np.argsort(rows, kind="stable")
    in_order = bool(np.all(order == np.arange(len(rows))))
    target = out if in_order else np.empty_like(out)
    srt = rows[order]
    cuts = np.flatnonzero(np.diff(srt) != 1) + 1
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(srt)]):
        pread_into(fd, memoryview(target[a:b]).cast("B"), images.offset + int(srt[a]) * row_bytes,
                   f"{images.filename}: file ends before row {int(srt[b - 1])}")
    if not in_order:
        out[order] = target
    return out


def cache_key(images_dir: Path, paths: Iterable[str]) -> str:
    """Key of a frame set: the resolved image folder and the sorted distinct paths."""
    h = hashlib.sha256()
    h.update(str(Path(images_dir).resolve()).encode())
    for p in sorted(set(paths)):
        h.update(b"\n" + p.encode())
    return h.hexdigest()[:24]


def frames_fingerprint(images_dir: Path, paths: Sequence[str]) -> str:
    """Size and modification time of every frame file: a cache written before a frame was replaced
    (another download or render into the same folder) no longer matches."""
    h = hashlib.sha256()
    root = str(images_dir)
    for p in paths:
        st = os.stat(os.path.join(root, p))
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def load_frames(images_dir: str | os.PathLike, paths: Iterable[str], *, cache_dir: str | os.PathLike | None = None,
                use_cache: bool = True, workers: int | None = None, progress: bool = True) -> FrameStore:
    """Decoded frames of ``paths`` (deduplicated, sorted), from the cache when present.

    On a miss the frames are decoded into ``<cache_dir>/frames-<key>.npy`` (written under a temporary
    name, renamed when complete, then described by a JSON file), and memory-mapped. An interrupted
    decode leaves no file that looks complete. The description holds :func:`frames_fingerprint`; a
    cache whose frame files have changed since (size or modification time) is decoded again.
    """
    images_dir = Path(images_dir)
    unique = tuple(sorted(set(paths)))
    if not unique:
        raise ValueError("no frames to load")
    if not use_cache:
        return FrameStore(load_images(images_dir, unique, workers=workers, progress=progress), unique)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(images_dir, unique)
    npy, meta_file = cache_dir / f"frames-{key}.npy", cache_dir / f"frames-{key}.json"
    fingerprint = frames_fingerprint(images_dir, unique)
    if npy.is_file() and meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
            images = np.load(npy, mmap_mode="r")
            if meta.get("format") == CACHE_FORMAT and images.shape[0] == len(unique) == meta.get("frames"):
                if meta.get("fingerprint") == fingerprint:
                    log.info("frame cache hit: %d frames from %s", len(unique), npy)
                    return FrameStore(images, unique, npy, from_cache=True)
                if "fingerprint" not in meta:
                    log.warning("frame cache %s was written without a fingerprint of its frame files (an earlier "
                                "version); decoding again", npy)
                else:
                    log.warning("frame cache %s: frame files under %s changed since it was written (size or "
                                "modification time); decoding again", npy, images_dir)
            else:
                log.warning("frame cache %s does not match its description; decoding again", npy)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable frame cache %s (%s)", npy, exc)
    cache_dir.mkdir(parents=True, exist_ok=True)
    first = _decode(images_dir / unique[0])
    fd, tmp = tempfile.mkstemp(prefix=f".frames-{key}.", suffix=".npy.tmp", dir=cache_dir)
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(unique), *first.shape))
        decode_into(out, images_dir, unique, workers=workers, progress=progress,
                    size_from=str(images_dir / unique[0]))
        out.flush()
        del out
        os.replace(tmp, npy)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(meta_file, json.dumps({
        "format": CACHE_FORMAT, "images_dir": str(images_dir.resolve()), "frames": len(unique),
        "shape": [len(unique), *first.shape], "dtype": "uint8", "layout": "NHWC RGB", "fingerprint": fingerprint,
    }, indent=1) + "\n")
    log.info("frame cache written: %d frames (%.1f MB) to %s", len(unique), npy.stat().st_size / 1e6, npy)
    return FrameStore(np.load(npy, mmap_mode="r"), unique, npy, from_cache=False)


@functools.lru_cache(maxsize=None)
def _constant(values: tuple, device: torch.device) -> torch.Tensor:
    """A per-channel constant (1, 3, 1, 1) on ``device``, made once: on a GPU, making it is a copy that
    waits for the device."""
    return torch.tensor(values, device=device).view(1, 3, 1, 1)


def preprocess(images: torch.Tensor | np.ndarray, mode: str = "caffe", *, device: torch.device | str | None = None,
               channels_last: bool = False) -> torch.Tensor:
    """uint8 frames (N, H, W, 3, RGB) → float32 network input (N, 3, H, W).

    * ``caffe``: channels reversed to BGR, minus the means B 104, G 117, R 123, no scaling (spec §4.2);
    * ``imagenet``: RGB scaled to [0, 1], minus mean (0.485, 0.456, 0.406), divided by std
      (0.229, 0.224, 0.225) — what pytorchcv's ImageNet weights expect.
    """
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape (N, H, W, 3), got {tuple(x.shape)} {x.dtype}")
    if device is not None:
        x = x.to(device, non_blocking=True)
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSING_MODES)}, got {mode!r}")
    x = x.permute(0, 3, 1, 2).float()
    if mode == "caffe":
        x = x.flip(1) - _constant(CAFFE_BGR_MEANS, x.device)
    else:
        x = (x / 255.0 - _constant(IMAGENET_MEAN, x.device)) / _constant(IMAGENET_STD, x.device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)
