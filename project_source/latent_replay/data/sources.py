"""What :mod:`.download` can get: the sources (URLs, checksums, targets), the items of
``latent-replay download``, the layout names under the download root and the errors.

The data model that :mod:`.transfer`, :mod:`.archives` and :mod:`.download` share; it imports none of them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..models.weights import PYTORCHCV_FILE, PYTORCHCV_SHA1
from .classes import CORE50_CLASS_NAMES, IMAGES_DIR, LABELS_FILE

DOWNLOADS_DIR = "downloads"
FILELISTS_DIR = "batch_filelists"
WEIGHTS_DIR = "weights"

_CORE50_SITE = "https://vlomonaco.github.io/core50"
_CORE50_RAW = "https://raw.githubusercontent.com/vlomonaco/core50/master"
_LABELS_TEXT = "\n".join(CORE50_CLASS_NAMES) + "\n"


class DownloadError(RuntimeError):
    """A download, verification or unpacking step failed; the message is one actionable line."""


class ChecksumError(DownloadError):
    """A file's checksum differs from the expected one (the file has been set aside as ``.corrupt``)."""


@dataclass(frozen=True)
class Source:
    """One downloadable file and what becomes of it under the download root."""

    name: str
    #: The ``latent-replay download`` item that fetches it (used in messages).
    item: str
    filename: str
    urls: tuple[str, ...]
    #: Result path relative to the root: a folder for unpacked archives, a file otherwise.
    target: str
    #: What the result is: ``labels``, ``images``, ``filelists`` or ``weights`` (selects the checks).
    kind: str
    md5: str | None = None
    sha1: str | None = None
    #: ``zip`` (unpacked) or ``file`` (kept as it is).
    archive: str = "zip"
    #: For a zip holding one file: the member to take; the checksum is that member's.
    member: str | None = None
    #: Converted checkpoint (relative to the root) and the import format (``pytorchcv`` / ``caffe``).
    checkpoint: str | None = None
    weights_format: str | None = None
    #: Optional sources are skipped (with a note) by ``weights``/``all`` when no copy is at hand.
    optional: bool = False
    #: Where a user finds the file by hand (for error messages).
    page: str = ""

    @property
    def checksum(self) -> tuple[str, str] | None:
        """``(algorithm, hex digest)`` that the file (or ``member``) must have, or None if unknown."""
        if self.md5:
            return "md5", self.md5.lower()
        if self.sha1:
            return "sha1", self.sha1.lower()
        return None


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("labels", "core50", LABELS_FILE,
           (f"{_CORE50_RAW}/extras/core50_labels.txt", f"{_CORE50_SITE}/extras/core50_labels.txt"),
           target=LABELS_FILE, kind="labels", archive="file",
           md5=hashlib.md5(_LABELS_TEXT.encode()).hexdigest(), page=f"{_CORE50_SITE}/"),
    Source("core50", "core50", "core50_128x128.zip",
           ("http://bias.csr.unibo.it/maltoni/download/core50/core50_128x128.zip",),
           target=IMAGES_DIR, kind="images", md5="745f3373fed08d69343f1058ee559e13",
           page=f"{_CORE50_SITE}/#download"),
    Source("filelists", "filelists", "batches_filelists_NICv2.zip",
           (f"{_CORE50_SITE}/data/batches_filelists_NICv2.zip", f"{_CORE50_RAW}/data/batches_filelists_NICv2.zip"),
           target=FILELISTS_DIR, kind="filelists", md5="460f980a6c85b86b1ec8e7c6067bb7a3",
           page=f"{_CORE50_SITE}/#download"),
    Source("pytorchcv", "weights", f"{PYTORCHCV_FILE}.zip",
           (f"https://github.com/osmr/imgclsmob/releases/download/v0.0.155/{PYTORCHCV_FILE}.zip",),
           target=f"{WEIGHTS_DIR}/{PYTORCHCV_FILE}", kind="weights", sha1=PYTORCHCV_SHA1, member=PYTORCHCV_FILE,
           checkpoint=f"{WEIGHTS_DIR}/mobilenet_v1_imagenet_pytorchcv.pt", weights_format="pytorchcv",
           page="https://github.com/osmr/imgclsmob/releases/tag/v0.0.155"),
    Source("caffe", "caffe", "MobileNetV1.caffemodel", (),
           target=f"{WEIGHTS_DIR}/MobileNetV1.caffemodel", kind="weights", archive="file",
           checkpoint=f"{WEIGHTS_DIR}/mobilenet_v1_imagenet_caffe.pt", weights_format="caffe", optional=True,
           page="the original Latent Replay release (Project Source/models/MobileNetV1.caffemodel)"),
)}

#: ``latent-replay download ITEM``: the sources each item covers, in order.
ITEMS: dict[str, tuple[str, ...]] = {
    "core50": ("labels", "core50"),
    "filelists": ("filelists",),
    "weights": ("pytorchcv", "caffe"),
    "caffe": ("caffe",),
    "all": ("labels", "core50", "filelists", "pytorchcv", "caffe"),
}
#: The source that ``--url``/``--md5``/``--sha1`` apply to, per item.
PRIMARY = {"core50": "core50", "filelists": "filelists", "weights": "pytorchcv", "caffe": "caffe"}

