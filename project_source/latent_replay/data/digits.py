"""Digit data for the GLR benchmark (glr-spec §6, §11.13): images, the MNIST IDX reader, domain streams.

Data sources
    * ``digits`` (the offline default): scikit-learn's bundled 8x8 digits (1,797 images, pixel values
      0..16, no download), rescaled to uint8 0..255 and split into train/test with a seeded, per-class
      split (:func:`load_digits_data`).
    * ``mnist``: the four standard IDX files in one folder (:func:`load_mnist`), each gzipped or not
      and named ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte`` (and so on). Every file's
      structure is checked (magic number, dimensions, size, label range) and, unless ``verify=False``,
      the SHA-256 of its *decompressed* content is compared with the published MNIST values
      (:data:`MNIST_FILES`), so a re-compressed but intact file is accepted.

Streams (:func:`make_stream`): every experience holds all ten classes (domain-incremental, a single head)
and transforms both its train and test images the same way.
    * ``permuted``: experience ``k`` permutes the pixels with a fixed permutation drawn from
      ``numpy.random.default_rng([seed, k])``. As in the reference (Avalanche's ``PermutedMNIST``),
      experience 0 is permuted too (``permute_first=False`` keeps it as is).
    * ``rotated``: experience ``k`` rotates by ``rotations[k]`` degrees counter-clockwise about the image
      centre, bilinear interpolation, black fill (default 0, 72, 144, 216, 288 as the reference
      code). 0 degrees is the identity and 180 flips both axes, exactly.

All images stay uint8 (N, H, W); the benchmark divides by 255.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .core50 import DatasetError
from ..utils import seeded_rng

log = logging.getLogger(__name__)

STREAMS = ("permuted", "rotated")
#: The reference's fixed angles (glr-spec §6: ``rotations_list=[0, 72, 144, 216, 288]``).
ROTATIONS = (0, 72, 144, 216, 288)
N_CLASSES = 10

# ------------------------------------------------------------------------------------------ IDX
#: IDX type code -> numpy dtype (big-endian, as the format stores it).
IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IMAGES_MAGIC = 0x00000803   # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801   # unsigned bytes, 1 dimension


@dataclass(frozen=True)
class MnistFile:
    """One of the four standard files: its stem, magic number, shape and published checksum."""

    key: str
    stem: str
    magic: int
    shape: tuple
    sha256: str   # of the decompressed file


#: The four MNIST files; ``sha256`` is of the uncompressed IDX content (the ``.gz`` files are
#: 9,912,422 / 28,881 / 1,648,877 / 4,542 bytes; decompressed 47,040,016 / 60,008 / 7,840,016 / 10,008).
MNIST_FILES = (
    MnistFile("train_images", "train-images-idx3-ubyte", IMAGES_MAGIC, (60000, 28, 28),
              "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    MnistFile("train_labels", "train-labels-idx1-ubyte", LABELS_MAGIC, (60000,),
              "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    MnistFile("test_images", "t10k-images-idx3-ubyte", IMAGES_MAGIC, (10000, 28, 28),
              "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    MnistFile("test_labels", "t10k-labels-idx1-ubyte", LABELS_MAGIC, (10000,),
              "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
)


def read_idx_bytes(path: str | Path) -> bytes:
    """The (decompressed) bytes of an IDX file; gzip is recognised by its content, not its name."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{path}: corrupt gzip data ({exc})") from None
    return raw


def parse_idx(data: bytes, name: str = "IDX data", *, magic: int | None = None) -> np.ndarray:
    """An IDX array from its bytes. ``magic`` (e.g. :data:`IMAGES_MAGIC`) is the required magic number;
    every problem raises :class:`DatasetError` with a one-line message that starts with ``name``."""
    if len(data) < 4:
        raise DatasetError(f"{name}: too short for an IDX file ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if magic is not None and found != magic:
        raise DatasetError(f"{name}: bad magic number 0x{found:08X} (expected 0x{magic:08X})")
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DatasetError(f"{name}: bad magic number 0x{found:08X} (not an IDX file)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{name}: truncated header ({len(data)} bytes, {ndim} dimensions need {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(f"{name}: {len(data)} bytes, but shape {shape} of {dtype.name} needs {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path, *, magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not); errors name the file."""
    return parse_idx(read_idx_bytes(path), str(path), magic=magic)


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (uint8/int8/int16/int32/float32/float64); gzip when ``compress`` or
    when the name ends in ``.gz``. Used by the tests to make fixtures."""
    path = Path(path)
    a = np.asarray(array)
    code = next((c for c, dt in IDX_DTYPES.items() if (dt.kind, dt.itemsize) == (a.dtype.kind, a.dtype.itemsize)),
                None)
    if code is None:
        raise ValueError(f"no IDX type for dtype {a.dtype}")
    data = bytes([0, 0, code, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape)
    data += np.ascontiguousarray(a, dtype=IDX_DTYPES[code]).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def find_mnist_file(directory: Path, stem: str) -> Path:
    """The file of ``stem`` in ``directory``: ``stem``, ``stem`` with '.' before 'idx', each with or
    without ``.gz`` (the first that exists)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(f"{directory / stem}: file not found (nor .gz, nor {dotted}[.gz])")


# ------------------------------------------------------------------------------------------ data sets
@dataclass(frozen=True)
class DigitData:
    """Train and test images (uint8, N x H x W) with int64 labels 0..9, and where they came from."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train_images.shape[1:])

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "image_shape": list(self.image_shape),
                "train_images": int(len(self.train_labels)), "test_images": int(len(self.test_labels))}

    def subsample_train(self, n: int, seed: int) -> "DigitData":
        """At most ``n`` training images, picked uniformly without replacement (seeded)."""
        if n <= 0:
            raise ValueError(f"the training subset must hold at least 1 image, got {n}")
        if n >= len(self.train_labels):
            return self
        pick = np.sort(seeded_rng(seed, "digits-train-subset").choice(len(self.train_labels), n, replace=False))
        return DigitData(self.name, self.train_images[pick], self.train_labels[pick], self.test_images,
                         self.test_labels, f"{self.source}; {n} training images picked with seed {seed}")


def load_digits_data(seed: int = 0, test_fraction: float = 0.25) -> DigitData:
    """scikit-learn's bundled 8x8 digits as uint8 0..255 (value·255/16, rounded), split per class:
    ``round(test_fraction · n_c)`` images of each class ``c``, chosen with ``seeded_rng(seed, "digits-test-split")``,
    form the test set (1,797 images -> 1,347 train / 450 test at the default 0.25)."""
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    rng = seeded_rng(seed, "digits-test-split")
    test = np.zeros(len(labels), dtype=bool)
    for c in range(N_CLASSES):
        idx = np.flatnonzero(labels == c)
        test[rng.choice(idx, int(round(test_fraction * len(idx))), replace=False)] = True
    return DigitData("digits", images[~test], labels[~test], images[test], labels[test],
                     f"sklearn.datasets.load_digits (8x8, 1797 images), test fraction {test_fraction}, "
                     f"split seed {seed}")


def load_mnist(directory: str | Path, *, verify: bool = True) -> DigitData:
    """MNIST from the four IDX files in ``directory`` (see the module docstring).

    Structure is always checked: magic numbers (0x00000803 images, 0x00000801 labels), three-dimensional
    uint8 images, as many labels as images, labels 0..9. With ``verify`` the content's SHA-256 and
    the canonical shapes (60,000 / 10,000 images of 28x28) must match too.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: MNIST folder does not exist (it must hold the four IDX files)")
    arrays, names = {}, {}
    for f in MNIST_FILES:
        path = find_mnist_file(directory, f.stem)
        data = read_idx_bytes(path)
        if verify:
            digest = hashlib.sha256(data).hexdigest()
            if digest != f.sha256:
                raise DatasetError(f"{path}: SHA-256 {digest[:16]}... of the content is not the published "
                                   f"MNIST {f.sha256[:16]}... (use --no-verify to accept it)")
        a = parse_idx(data, str(path), magic=f.magic)
        if f.magic == IMAGES_MAGIC and a.ndim != 3:
            raise DatasetError(f"{path}: images must be N x H x W, got shape {a.shape}")
        if verify and a.shape != f.shape:
            raise DatasetError(f"{path}: shape {a.shape}, expected {f.shape}")
        arrays[f.key], names[f.key] = a, path
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DatasetError(f"{names[f'{split}_labels']}: {len(labels)} labels for {len(images)} images "
                               f"in {names[f'{split}_images'].name}")
        if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
            raise DatasetError(f"{names[f'{split}_labels']}: labels must be 0..9, found "
                               f"{int(labels.min())}..{int(labels.max())}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DatasetError(f"{names['test_images']}: image size {arrays['test_images'].shape[1:]} differs from "
                           f"the training images' {arrays['train_images'].shape[1:]}")
    check = "SHA-256 verified" if verify else "checksums not verified"
    log.info("MNIST from %s (%s)", directory, check)
    return DigitData("mnist", arrays["train_images"], arrays["train_labels"].astype(np.int64), arrays["test_images"],
                     arrays["test_labels"].astype(np.int64), f"MNIST IDX files in {directory} ({check})")


# ------------------------------------------------------------------------------------------ streams
def experience_permutation(n_pixels: int, seed: int, experience: int) -> np.ndarray:
    """The fixed pixel permutation of ``experience``: ``default_rng([seed, experience]).permutation``."""
    return np.random.default_rng([int(seed), int(experience)]).permutation(int(n_pixels))


def permute_images(images: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Every image's pixels (flattened row-major) reordered by ``permutation``: out[:, i] = in[:, perm[i]]."""
    flat = images.reshape(len(images), -1)
    if len(permutation) != flat.shape[1]:
        raise ValueError(f"a permutation of {len(permutation)} pixels for images of {flat.shape[1]}")
    return np.ascontiguousarray(flat[:, permutation]).reshape(images.shape)


def rotate_images(images: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate uint8 images (N, H, W) by ``degrees`` counter-clockwise about their centre (bilinear,
    black fill), rounded back to uint8. Multiples of 90 degrees are exact."""
    angle = float(degrees) % 360.0
    if angle == 0.0:
        return images.copy()
    if angle % 90.0 == 0.0:
        return np.ascontiguousarray(np.rot90(images, int(angle // 90), axes=(1, 2)))
    from scipy import ndimage

    out = ndimage.rotate(images.astype(np.float32), angle, axes=(1, 2), reshape=False, order=1,
                         mode="constant", cval=0.0)
    return np.rint(out).clip(0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Experience:
    """One experience of a stream: its transformed train and test images and their labels."""

    index: int
    transform: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def make_stream(data: DigitData, kind: str, *, n_experiences: int = 5, seed: int = 0,
                rotations=ROTATIONS, permute_first: bool = True) -> list[Experience]:
    """The ``permuted`` or ``rotated`` stream of ``data`` (see the module docstring)."""
    if kind not in STREAMS:
        raise ValueError(f"stream must be one of {', '.join(STREAMS)}, got {kind!r}")
    if n_experiences < 1:
        raise ValueError(f"a stream needs at least 1 experience, got {n_experiences}")
    if kind == "rotated" and len(rotations) < n_experiences:
        raise ValueError(f"{n_experiences} experiences but only {len(rotations)} rotation angles")
    n_pixels = int(np.prod(data.image_shape))
    out = []
    for k in range(n_experiences):
        if kind == "permuted":
            if k == 0 and not permute_first:
                transform, fn = "identity", (lambda x: x.copy())
            else:
                perm = experience_permutation(n_pixels, seed, k)
                transform, fn = f"permutation default_rng([{seed}, {k}])", (lambda x, p=perm: permute_images(x, p))
        else:
            transform, fn = f"rotation {rotations[k]:g} deg", (lambda x, a=rotations[k]: rotate_images(x, a))
        out.append(Experience(k, transform, fn(data.train_images), data.train_labels, fn(data.test_images),
                              data.test_labels))
    return out
