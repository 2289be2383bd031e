"""Synthetic CORe50: a procedurally rendered stand-in with the exact CORe50 on-disk layout.

The real CORe50 is 50 hand-held objects (10 categories x 5) filmed in 11 sessions (different
backgrounds, lighting and poses) as short 20 fps videos. This module renders a small, learnable
but non-trivial imitation of that structure so the whole pipeline can run without the download:

* every object has a stable identity -- its category's base shape and hue, plus its own aspect
  ratio, colour shift, second colour and texture (stripes / checker / dots / gradient);
* every session has its own background (colour, gradient, pattern, out-of-focus clutter),
  lighting (gain, contrast, tint, light direction), camera distance and a skin-coloured "hand";
* every (session, object) video moves smoothly: drift, in-plane rotation, a fake out-of-plane
  squash, camera shake, slight flicker, plus per-pixel sensor noise.

Everything is drawn from ``np.random.default_rng`` seeded with explicit (seed, kind, ids) tuples,
so the same arguments give byte-identical PNG files regardless of worker count or order.
"""

from __future__ import annotations

import colorsys
import functools
import json
import logging
import math
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from latent_replay.data.classes import (
    CORE50_CLASS_NAMES,
    IMAGES_DIR,
    LABELS_FILE,
    NUM_SESSIONS,
    OBJECTS_PER_CATEGORY,
)

logger = logging.getLogger(__name__)

INFO_FILE = "synthetic_core50.json"
#: Bump when the renderer changes, so an old dataset is not mistaken for a current one.
GENERATOR_VERSION = 2
FPS = 20.0
#: Frames of a real CORe50 video (15 s at 20 fps); shorter synthetic videos sample it evenly.
VIDEO_FRAMES = 300

# Seed-domain tags, so category / object / session / video streams never collide.
_CATEGORY, _OBJECT, _SESSION, _VIDEO = 1, 2, 3, 4


@dataclass(frozen=True)
class SyntheticInfo:
    """What :func:`write_synthetic_core50` wrote (or found already written)."""

    out_dir: Path
    sessions: tuple[int, ...]
    objects: tuple[int, ...]  # 1-based CORe50 object numbers
    frames: int
    size: int
    seed: int
    n_images: int

    def to_json(self) -> dict:
        return {
            "format": "synthetic_core50",
            "generator_version": GENERATOR_VERSION,
            "sessions": list(self.sessions),
            "objects": list(self.objects),
            "frames": self.frames,
            "size": self.size,
            "seed": self.seed,
            "n_images": self.n_images,
        }


def image_path(session: int, obj: int, frame: int) -> Path:
    """Path of one frame relative to the dataset root, e.g. ``core50_128x128/s3/o12/C_03_12_007.png``."""
    return Path(IMAGES_DIR, f"s{session}", f"o{obj}", f"C_{session:02d}_{obj:02d}_{frame:03d}.png")


def _rng(seed: int, *ids: int) -> np.random.Generator:
    return np.random.default_rng([seed, *ids])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Shapes: implicit functions f(u, v) of object-local coordinates, f < 1 inside, f ~ 1 on edge.
# --------------------------------------------------------------------------------------------
def _polygon(u, v, n, inradius):
    angles = [math.pi / 2 + 2 * math.pi * i / n for i in range(n)]
    return functools.reduce(np.maximum, [math.cos(a) * u + math.sin(a) * v for a in angles]) / inradius


_SHAPES = (  # one base shape per category (the mapping is arbitrary)
    lambda u, v: _polygon(u, v, 6, 0.9),                                         # hexagon
    lambda u, v: np.maximum(np.abs(u), np.abs(v)),                                # rectangle
    lambda u, v: np.hypot(u, v) / (0.7 + 0.3 * np.cos(5 * np.arctan2(v, u))),    # star
    lambda u, v: _polygon(u, v, 3, 0.6),                                          # triangle
    lambda u, v: np.maximum(np.hypot(u, v), 1.55 - np.hypot(u, v)),              # ring
    lambda u, v: np.abs(u) + np.abs(v),                                           # diamond
    lambda u, v: np.hypot(u, v),                                                  # ellipse
    lambda u, v: np.hypot(np.maximum(np.abs(u) - 0.6, 0), v) / 0.4,               # capsule
    lambda u, v: np.maximum(np.hypot(u, v), 1.75 - np.hypot(u - 0.45, v)),       # crescent
    lambda u, v: np.minimum(np.maximum(np.abs(u), np.abs(v) / 0.35),              # cross
                            np.maximum(np.abs(u) / 0.35, np.abs(v))),
)


def _texture(kind, u, v, freq, angle):
    """Texture mix weight in [0, 1] on object-local coordinates (moves with the object)."""
    w = math.cos(angle) * u + math.sin(angle) * v
    if kind == 0:  # stripes
        return 0.5 + 0.5 * np.sin(freq * np.pi * w)
    if kind == 1:  # checker
        return np.clip(0.5 + 3 * np.sin(freq * np.pi * u) * np.sin(freq * np.pi * v), 0, 1)
    if kind == 2:  # dots
        return np.clip(3 * (np.cos(freq * np.pi * u) * np.cos(freq * np.pi * v) - 0.4), 0, 1)
    return np.clip(0.5 + 0.6 * w, 0, 1)  # gradient


@dataclass(frozen=True)
class _Object:
    shape: int
    aspect: float
    colors: tuple[np.ndarray, np.ndarray]
    texture: int
    freq: float
    tex_angle: float


def _object_identity(seed: int, obj: int) -> _Object:
    """Stable look of object ``obj`` (1-based): category traits plus finer per-object ones."""
    category, k = divmod(obj - 1, OBJECTS_PER_CATEGORY)
    crng = _rng(seed, _CATEGORY, category)
    hue = _rng(seed).uniform() + 0.1 * category + crng.uniform(-0.03, 0.03)  # seed-wide hue offset
    aspect = crng.uniform(0.55, 1.0)
    texture_offset = int(crng.integers(4))
    orng = _rng(seed, _OBJECT, obj)
    hue += orng.uniform(-0.05, 0.05)
    main = _hsv(hue, orng.uniform(0.45, 0.95), orng.uniform(0.5, 0.95))
    second = _hsv(hue + orng.uniform(-0.25, 0.25), orng.uniform(0.1, 0.9), orng.uniform(0.15, 1.0))
    return _Object(
        shape=category,
        aspect=float(aspect * orng.uniform(0.85, 1.15)),
        colors=(main, second),
        texture=(texture_offset + k) % 4,  # objects of a category mostly differ in texture type
        freq=float(orng.uniform(1.5, 4.5)),
        tex_angle=float(orng.uniform(0, np.pi)),
    )


# --------------------------------------------------------------------------------------------
# Sessions: background, lighting, camera distance, hand colour.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Session:
    background: np.ndarray  # 3 x (size + 2 * margin)^2, float32 in [0, 1]
    margin: int
    gain: float
    contrast: float
    tint: np.ndarray
    light: tuple[float, float]  # light direction in the image plane
    distance: float    # object scale multiplier
    hand: np.ndarray   # skin colour
    noise: int         # uniform sensor noise amplitude, in 8-bit units


@functools.lru_cache(maxsize=NUM_SESSIONS)  # shared by all objects' videos of a session
def _session(seed: int, session: int, size: int) -> _Session:
    rng = _rng(seed, _SESSION, session)
    margin = size // 8
    n = size + 2 * margin
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    base = _hsv(rng.uniform(), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.85))
    other = _hsv(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.2, 0.9))
    a = rng.uniform(0, 2 * np.pi)
    shade = rng.uniform(0.1, 0.35) * (np.cos(a) * (x - 0.5) + np.sin(a) * (y - 0.5))
    pattern = np.zeros_like(x)
    for _ in range(3):  # low-frequency wallpaper / table pattern
        b, f = rng.uniform(0, np.pi), rng.uniform(1, 8)
        pattern += np.sin(2 * np.pi * f * (np.cos(b) * x + np.sin(b) * y) + rng.uniform(0, 2 * np.pi))
    mix = np.clip(0.5 + rng.uniform(0.1, 0.3) * pattern, 0, 1)[..., None]
    bg = (base * (1 - mix) + other * mix) * (1 + shade)[..., None]
    for _ in range(int(rng.integers(3, 9))):  # out-of-focus clutter blobs
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2)
        alpha = np.clip((1 - np.hypot(x - cx, (y - cy) * rng.uniform(0.5, 2)) / r) * 4, 0, 1)
        color = _hsv(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.2, 0.9))
        bg = bg * (1 - alpha[..., None]) + color * alpha[..., None]
    background = np.ascontiguousarray(np.clip(bg, 0, 1).astype(np.float32).transpose(2, 0, 1))
    background.flags.writeable = False
    return _Session(
        background=background,
        margin=margin,
        gain=float(rng.uniform(0.65, 1.3)),
        contrast=float(rng.uniform(0.7, 1.25)),
        tint=rng.uniform(0.85, 1.15, 3).astype(np.float32),
        light=tuple(float(x) for x in rng.normal(size=2) * 0.25),
        distance=float(rng.uniform(0.8, 1.15)),
        hand=_hsv(rng.uniform(0.02, 0.09), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95)),
        noise=int(rng.integers(2, 6)),
    )


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------
def render_video(seed: int, session: int, obj: int, frames: int, size: int):
    """Yield the ``frames`` uint8 RGB images (size x size x 3) of one (session, object) video."""
    ident, sess = _object_identity(seed, obj), _session(seed, session, size)
    rng = _rng(seed, _VIDEO, session, obj)
    # Pose trajectory: a few smooth sinusoids of time t (seconds at 20 fps).
    center = size * (0.5 + rng.uniform(-0.08, 0.08, 2))  # CORe50 crops are object-centred
    drift_amp = size * rng.uniform(0.02, 0.08, 2)
    drift_f, drift_ph = rng.uniform(0.1, 0.4, 2), rng.uniform(0, 2 * np.pi, 2)
    radius = size * rng.uniform(0.32, 0.4) * sess.distance
    angle0, spin = rng.uniform(0, 2 * np.pi), rng.uniform(-0.6, 0.6)
    squash_f, squash_ph = rng.uniform(0.1, 0.5), rng.uniform(0, 2 * np.pi)
    shake_ph = rng.uniform(0, 2 * np.pi, 2)
    hand_angle, hand_size = float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.3, 0.5))
    colors = [c.reshape(3, 1, 1) for c in (*ident.colors, sess.hand)]
    tint = sess.tint.reshape(3, 1, 1) * np.float32(sess.gain)
    coords = np.arange(size, dtype=np.float32) + 0.5
    # A short video samples the frames of a full 15 s CORe50 video evenly, so that a few frames still
    # cover its range of poses (consecutive frames of a 20 fps video are near-duplicates).
    step = max(1.0, VIDEO_FRAMES / frames)
    for frame in range(frames):  # all per-frame scalars are Python floats: arrays stay float32
        t = frame * step / FPS
        cx, cy = (float(x) for x in center + drift_amp * np.sin(2 * np.pi * drift_f * t + drift_ph))
        angle = float(angle0 + spin * t + 0.05 * np.sin(3 * t))
        r = float(radius * (1 + 0.05 * np.sin(1.3 * t + drift_ph[0])))
        squash = float(1 - 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * squash_f * t + squash_ph)))
        dx, dy = (coords[None, :] - cx) / r, (coords[:, None] - cy) / r
        c, s = math.cos(angle), math.sin(angle)
        u = (c * dx + s * dy) / squash
        v = (c * dy - s * dx) / ident.aspect
        edge = r / 1.5  # a ~1.5 px soft edge
        alpha = np.clip((1 - _SHAPES[ident.shape](u, v)) * edge, 0, 1)
        mix = _texture(ident.texture, u, v, ident.freq, ident.tex_angle)
        shade = 1 + sess.light[0] * dx + sess.light[1] * dy
        color = (colors[0] + (colors[1] - colors[0]) * mix) * shade
        # Camera shake: a smoothly moving crop of the (larger) session background.
        ox, oy = (int(sess.margin * (1 + 0.8 * np.sin(0.7 * t + p))) for p in shake_ph)
        bg = sess.background[:, oy:oy + size, ox:ox + size]
        img = bg + (color - bg) * alpha
        # A skin-coloured "hand" (an ellipse pointing outwards) holding the object from one side.
        ha = hand_angle + 0.1 * math.sin(t)
        hc, hs = math.cos(ha), math.sin(ha)
        hx, hy = dx - 1.3 * hc, dy - 1.3 * hs
        along, across = (hc * hx + hs * hy) / 1.8, hc * hy - hs * hx
        h_alpha = np.clip((1 - np.sqrt(along * along + across * across) / hand_size) * edge * hand_size, 0, 1)
        img += (colors[2] - img) * h_alpha
        # Lighting (contrast, gain with a slight flicker, tint) and sensor noise, in 8-bit units.
        gain = 255 * (1 + 0.03 * math.sin(2.1 * t))
        img = ((img - 0.5) * sess.contrast + 0.5) * (tint * np.float32(gain))
        img += rng.integers(-sess.noise, sess.noise + 1, img.shape, dtype=np.int8)
        yield np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0))


def _write_video(root: Path, seed: int, session: int, obj: int, frames: int, size: int) -> int:
    (root / image_path(session, obj, 0).parent).mkdir(parents=True, exist_ok=True)
    for frame, img in enumerate(render_video(seed, session, obj, frames, size)):
        # compress_level=1: the sensor noise defeats LZ matching, so higher levels only cost time
        Image.fromarray(img).save(root / image_path(session, obj, frame), format="PNG", compress_level=1)
    return frames


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------
def _check_int(name: str, value, lo: int, hi: int | None = None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        allowed = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")


def load_synthetic_info(out_dir) -> SyntheticInfo | None:
    """The :class:`SyntheticInfo` of a complete synthetic dataset at ``out_dir``, else ``None``."""
    out_dir = Path(out_dir)
    try:
        meta = json.loads((out_dir / INFO_FILE).read_text())
        if meta.get("format") != "synthetic_core50" or meta.get("generator_version") != GENERATOR_VERSION:
            return None
        return SyntheticInfo(out_dir, tuple(meta["sessions"]), tuple(meta["objects"]),
                             meta["frames"], meta["size"], meta["seed"], meta["n_images"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _same(found: SyntheticInfo | None, wanted: SyntheticInfo) -> bool:
    return found is not None and found.to_json() == wanted.to_json()


def _remove_dead_staging(out_dir: Path) -> None:
    """Remove the staging folders (``.<name>.partial-<pid>-<id>``) that a killed writer of ``out_dir`` left:
    those whose process no longer exists. A running writer's folder is left alone."""
    for d in out_dir.parent.glob(f".{out_dir.name}.partial-*-*"):
        pid = d.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            logger.info("removing %s, left by an interrupted writer (process %s)", d, pid)
            shutil.rmtree(d, ignore_errors=True)
        except OSError:   # exists, owned by someone else
            pass


def write_synthetic_core50(out_dir, *, sessions: int = 11, categories: int = 10,
                           objects_per_category: int = 5, frames: int = 300, size: int = 128,
                           seed: int = 0, workers: int | None = None,
                           progress: bool = True) -> SyntheticInfo:
    """Write a synthetic CORe50 (labels file + ``core50_128x128/s*/o*/C_SS_OO_FFF.png``) to ``out_dir``.

    Sessions ``1..sessions``; objects ``c*5 + k + 1`` for the first ``categories`` categories and
    the first ``objects_per_category`` objects of each; frames ``000..frames-1``; ``size`` x ``size``
    RGB PNGs (the folder keeps its CORe50 name whatever the size). Images are rendered in a staging
    folder next to ``out_dir``; ``synthetic_core50.json`` is written last, then the staging folder
    is renamed into place, so a complete dataset is exactly one with the JSON file. Calling again
    with the same arguments returns at once; a non-empty ``out_dir`` holding anything else raises
    ``FileExistsError``.
    """
    _check_int("sessions", sessions, 1, NUM_SESSIONS)
    _check_int("categories", categories, 1, len(CORE50_CLASS_NAMES) // OBJECTS_PER_CATEGORY)
    _check_int("objects_per_category", objects_per_category, 1, OBJECTS_PER_CATEGORY)
    _check_int("frames", frames, 1, 999)
    _check_int("size", size, 16)
    _check_int("seed", seed, 0)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    _check_int("workers", workers, 1)

    out_dir = Path(out_dir)
    objects = tuple(c * OBJECTS_PER_CATEGORY + k + 1
                    for c in range(categories) for k in range(objects_per_category))
    session_ids = tuple(range(1, sessions + 1))
    info = SyntheticInfo(out_dir, session_ids, objects, int(frames), int(size), int(seed),
                         len(session_ids) * len(objects) * int(frames))

    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if _same(load_synthetic_info(out_dir), info):
            logger.info("Synthetic CORe50 already complete at %s", out_dir)
            return info
        raise FileExistsError(f"{out_dir} already holds something other than a synthetic CORe50 with these "
                              "parameters; choose a new or empty folder")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    logger.info("Writing %d synthetic CORe50 images to %s (%d workers)", info.n_images, out_dir, workers)
    try:
        (staging / LABELS_FILE).write_text("\n".join(CORE50_CLASS_NAMES) + "\n")
        with ThreadPoolExecutor(workers) as pool, \
                tqdm(total=info.n_images, desc="synthetic CORe50", unit="img", disable=not progress) as bar:
            futures = [pool.submit(_write_video, staging, info.seed, s, o, info.frames, info.size)
                       for s in session_ids for o in objects]
            try:
                for future in as_completed(futures):
                    bar.update(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        tmp = staging / (INFO_FILE + ".tmp")
        tmp.write_text(json.dumps(info.to_json(), indent=2) + "\n")
        os.replace(tmp, staging / INFO_FILE)
        try:
            os.replace(staging, out_dir)  # POSIX: atomically replaces an empty directory too
        except OSError:
            if _same(load_synthetic_info(out_dir), info):  # a concurrent writer won the race
                shutil.rmtree(staging, ignore_errors=True)
                return info
            out_dir.rmdir()  # Windows cannot rename onto an existing (empty) directory
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Synthetic CORe50 complete: %s", out_dir)
    return info
