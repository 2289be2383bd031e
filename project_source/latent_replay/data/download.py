"""Get the real data: CORe50 128x128 images, the official NICv2 filelists and the ImageNet weights.

Layout under the download root (``latent-replay download ... --root DIR``)::

    DIR/core50_labels.txt                       the 50 object names
    DIR/core50_128x128/s1..s11/o1..o50/*.png    the images (a dataset root for ``open_root(DIR)``)
    DIR/batch_filelists/NIC_v2_<S>/run<R>/...   the official NICv2 filelists, as shipped
    DIR/weights/mobilenet_w1-0895-7e1d739f.pth  pytorchcv's ImageNet MobileNetV1 (raw, kept)
    DIR/weights/mobilenet_v1_imagenet_pytorchcv.pt   ... converted into our checkpoint
    DIR/weights/MobileNetV1.caffemodel          the original Caffe model (optional, placed by hand)
    DIR/weights/mobilenet_v1_imagenet_caffe.pt       ... converted into our checkpoint
    DIR/downloads/                              partial downloads (``.part``), kept archives,
                                                files set aside after a checksum mismatch (``.corrupt``)

Every source (:data:`SOURCES`) has a list of URLs tried in order. A download goes to
``downloads/<file>.part`` and resumes with an HTTP range request after an interruption (in the same
call, up to ``retries`` times per URL, and in a later call). The finished file's checksum is verified
before anything is unpacked; a mismatch renames it to ``<file>.corrupt`` and it is never used. Zip
members are checked (no absolute paths, no ``..``, no links leading outside) before anything is
written, unpacked into a temporary folder next to the target, validated, then moved into place with
one rename. A source whose result is present is left alone (``force`` replaces it). An archive put
into ``DIR`` or ``DIR/downloads`` by hand is verified and used instead of downloading.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from ..models.weights import PYTORCHCV_FILE, PYTORCHCV_SHA1
from .classes import CORE50_CLASS_NAMES, IMAGES_DIR, LABELS_FILE, NUM_CLASSES, NUM_SESSIONS
from .filelists import SCENARIO_DIR_NAMES, SCENARIOS, FilelistError, atomic_write_text, find_scenario_dir

log = logging.getLogger(__name__)

DOWNLOADS_DIR = "downloads"
FILELISTS_DIR = "batch_filelists"
WEIGHTS_DIR = "weights"
#: Frames in the full CORe50 128x128 release (reported by ``verify``).
CORE50_FRAMES = 164_866
CHUNK = 1 << 20
USER_AGENT = "latent-replay-downloader/1"
#: Seconds to wait before retrying a cut transfer (times the attempt number).
RETRY_DELAY = 2.0

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


@dataclass(frozen=True)
class Outcome:
    """What :func:`download` did with one source: ``present``, ``installed``, ``converted`` or ``skipped``."""

    name: str
    status: str
    message: str


@dataclass(frozen=True)
class Check:
    """One line of :func:`verify`: ``ok``, ``missing``, ``bad`` or ``note`` (informational)."""

    name: str
    status: str
    detail: str


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _io_error(path: Path, exc: OSError, doing: str = "write") -> DownloadError:
    """A one-line DownloadError for a local file-system error (disk full and permissions get their own)."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        try:
            free = f", {_size(shutil.disk_usage(path.parent).free)} free"
        except OSError:
            free = ""
        return DownloadError(f"{path}: disk full while writing{free}; free some space or choose another --root")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DownloadError(f"{path}: not writable ({exc.strerror}); fix the permissions or choose another --root")
    return DownloadError(f"{path}: cannot {doing} ({exc.strerror or exc})")


def _check_writable(root: Path) -> None:
    """Create ``root`` if needed and prove it writable with a temporary file (one-line error if not)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DownloadError(f"{root}: target folder is not writable ({exc.strerror or exc}); "
                            "fix its permissions or choose another --root") from None


def _check_space(folder: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DownloadError(f"{folder}: not enough disk space to {what}: need {_size(need)}, "
                            f"{_size(free)} free; free some space or choose another --root")


def _digest(path: Path, algo: str, member: str | None = None) -> str:
    """Hex digest of a file, or of one member of a zip file (streamed, nothing written)."""
    h = hashlib.new(algo)
    if member is None:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
        return h.hexdigest()
    with zipfile.ZipFile(path) as zf, zf.open(member) as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _set_aside(path: Path) -> Path:
    corrupt = path.with_name(path.name + ".corrupt")
    os.replace(path, corrupt)
    return corrupt


def check_file(path: Path, expected: tuple[str, str] | None, member: str | None = None) -> str:
    """Verify ``path`` (or its zip ``member``) against ``(algorithm, hex)``; returns the digest.

    A mismatch (or an unreadable archive) renames the file to ``<name>.corrupt`` and raises
    :class:`ChecksumError`. With ``expected=None`` the SHA-1 is computed and logged so it can be recorded.
    """
    algo, want = expected if expected else ("sha1", None)
    what = f"{path.name}:{member}" if member else path.name
    try:
        got = _digest(path, algo, member)
    except (zipfile.BadZipFile, KeyError) as exc:
        corrupt = _set_aside(path)
        raise ChecksumError(f"{path}: cannot read {member or 'the file'} ({exc}); set aside as {corrupt}, "
                            "not used") from None
    if want is None:
        log.warning("%s: no published checksum, not verified; its sha1 is %s (record it, pass --sha1 next time)",
                    what, got)
    elif got != want:
        corrupt = _set_aside(path)
        raise ChecksumError(f"{what}: {algo} {got} does not match the expected {want}; "
                            f"set aside as {corrupt}, not used")
    else:
        log.info("%s: %s verified (%s)", what, algo, got)
    return got


# ------------------------------------------------------------------------------------------------
# HTTP with resume
# ------------------------------------------------------------------------------------------------
class _SourceFailed(Exception):
    """This URL did not deliver the file; the next one is tried."""


class _Cut(Exception):
    """The transfer stopped early; it can be resumed."""


def _urlopen(request: urllib.request.Request, timeout: float):
    """The one place that opens a URL (tests wrap it to make sure only 127.0.0.1 is reached)."""
    return urllib.request.urlopen(request, timeout=timeout)


def _content_range(value: str | None) -> tuple[int, int | None]:
    """``(first byte, total size or None)`` from a ``Content-Range: bytes a-b/total`` header."""
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    if not m:
        return -1, None
    return int(m.group(1)), None if m.group(2) == "*" else int(m.group(2))


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Fetch ``url`` into ``part``, continuing from its current size with a range request."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    with _urlopen(urllib.request.Request(url, headers=headers), timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None and length.isdigit() else None
        if start and resp.status == 206:
            first, full = _content_range(resp.headers.get("Content-Range"))
            if first != start:
                part.unlink()
                raise _Cut(f"server answered a range from byte {first}, not {start}; starting over")
            if full is not None:
                total = full
        elif start:
            log.info("%s: server ignored the range request; starting over", url)
            start, total = 0, (int(length) if length is not None and length.isdigit() else None)
        if total is not None:
            _check_space(part.parent, total - start, f"download {part.name[:-5]}")
        try:
            fh = open(part, "ab" if start else "wb")
        except OSError as exc:
            raise _io_error(part, exc) from None
        with fh, tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=part.name[:-5], disable=not progress) as bar:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                try:
                    fh.write(chunk)
                except OSError as exc:
                    raise _io_error(part, exc) from None
                bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Cut(f"connection closed after {_size(got)} of {_size(total)}")


def _get(url: str, part: Path, retries: int, timeout: float, progress: bool) -> None:
    """Download ``url`` into ``part``, resuming after cuts up to ``retries`` attempts; else _SourceFailed."""
    host = urlsplit(url).hostname or url
    attempt = 1
    while True:
        try:
            return _transfer(url, part, timeout, progress)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and part.exists():
                total = re.fullmatch(r"bytes \*/(\d+)", (exc.headers or {}).get("Content-Range", "") or "")
                if total and int(total.group(1)) == part.stat().st_size:
                    # the previous call got every byte and stopped before renaming: the checksum decides
                    log.info("%s: the partial file already holds all %s", url, _size(int(total.group(1))))
                    return None
                log.info("%s: range not satisfiable; starting over", url)   # not a prefix of this file
                part.unlink()
                continue
            raise _SourceFailed(f"HTTP error {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, TimeoutError):
                raise _SourceFailed(f"cannot reach {host} ({exc.reason}); no network connection?") from None
            reason = f"timed out after {timeout:g} s"
        except TimeoutError:
            reason = f"timed out after {timeout:g} s"
        except (_Cut, ConnectionError, http.client.HTTPException) as exc:
            reason = str(exc) or type(exc).__name__
        have = part.stat().st_size if part.exists() else 0
        if attempt >= retries:
            kept = f"; {_size(have)} kept in {part}, the next call resumes from there" if have else ""
            raise _SourceFailed(f"{reason}{kept}")
        attempt += 1
        log.warning("%s: %s; resuming from byte %d (attempt %d of %d)", url, reason, have, attempt, retries)
        time.sleep(RETRY_DELAY * (attempt - 1))


def _by_hand(src: Source, root: Path, last: str | None) -> str:
    """The one-line error after every URL failed (or when none is known): how to get the file by hand."""
    check = "it prints its sha1"
    if src.checksum:
        check = f"it verifies the {src.checksum[0]} {src.checksum[1]}{f' of {src.member}' if src.member else ''} first"
    where = root / DOWNLOADS_DIR
    if src.member:
        where = f"{where} (or the unzipped {src.member} in {(root / src.target).parent})"
    then = (f"put it in {where}, then run `latent-replay download {src.item} --root {root}` ({check}) "
            f"and `latent-replay download --verify --root {root}`")
    if last is None:
        return (f"no download URL is known for {src.filename}: get it from {src.page} or pass --url URL "
                f"[--sha1 HEX]; or {then}")
    n = len(src.urls)
    return (f"all {n} source{'s' if n != 1 else ''} for {src.name} failed (last: {last}); "
            f"download {src.filename} by hand from {src.urls[0]} (or pass --url MIRROR), {then}")


def fetch(src: Source, root: Path, *, retries: int = 3, timeout: float = 30.0, progress: bool = True) -> Path:
    """A verified copy of ``src.filename``: one placed by hand in ``root`` or ``root/downloads``, else
    downloaded from ``src.urls`` in order. Raises DownloadError (how to get it by hand) if all fail."""
    downloads = root / DOWNLOADS_DIR
    for local in (downloads / src.filename, root / src.filename):
        if local.is_file() and local != root / src.target:
            log.info("%s: using %s", src.name, local)
            check_file(local, src.checksum, src.member)
            return local
    if not src.urls:
        raise DownloadError(_by_hand(src, root, None))
    downloads.mkdir(parents=True, exist_ok=True)
    dest = downloads / src.filename
    part = dest.with_name(dest.name + ".part")
    last = ""
    for url in src.urls:
        log.info("%s: downloading %s", src.name, url)
        try:
            _get(url, part, retries, timeout, progress)
            os.replace(part, dest)
            check_file(dest, src.checksum, src.member)
            return dest
        except (_SourceFailed, ChecksumError) as exc:
            last = f"{url}: {exc}"
            log.warning("%s", last)
    raise DownloadError(_by_hand(src, root, last))


# ------------------------------------------------------------------------------------------------
# zip safety and unpacking
# ------------------------------------------------------------------------------------------------
def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def check_members(zf: zipfile.ZipFile, archive: Path) -> None:
    """Reject absolute member paths, ``..`` components and symbolic links; raises before anything is
    written. The CORe50, filelist and weight archives hold no links, and a link (alone, or through
    another link) can make a later member land outside the target, so none is unpacked."""
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
            raise DownloadError(f"{archive}: member {info.filename!r} has an absolute path; refusing to unpack")
        if ".." in parts:
            raise DownloadError(f"{archive}: member {info.filename!r} contains '..'; refusing to unpack")
        if _is_link(info):
            raise DownloadError(f"{archive}: member {info.filename!r} is a symbolic link (the archives this "
                                "suite reads hold none); refusing to unpack")


def _extract(zf: zipfile.ZipFile, infos: Sequence[zipfile.ZipInfo], dest: Path, progress: bool) -> None:
    for info in tqdm(infos, desc="unpacking", unit="file", disable=not progress or len(infos) < 100, leave=False):
        out = dest.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
        if info.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as s, open(out, "wb") as d:
            shutil.copyfileobj(s, d, CHUNK)


def _scenario_dir(name: str) -> bool:
    return any(re.fullmatch(p.format(s=r"\d+"), name) for p in SCENARIO_DIR_NAMES)


def _looks_right(kind: str, folder: Path) -> bool:
    names = {e.name for e in folder.iterdir() if e.is_dir()}
    if kind == "images":
        return any(re.fullmatch(r"s\d+", n) for n in names)
    return any(_scenario_dir(n) for n in names)


def _content_root(kind: str, top: Path, archive: Path) -> Path:
    """The unpacked folder that holds the content: ``top``, or the single folder it wraps (repeatedly)."""
    folder = top
    while not _looks_right(kind, folder):
        entries = [e for e in folder.iterdir() if not e.name.startswith((".", "__MACOSX"))]
        if len(entries) != 1 or not entries[0].is_dir():
            want = "session folders s1..s11" if kind == "images" else "NIC_v2_<S>/run<R> folders"
            raise DownloadError(f"{archive}: unexpected layout, no {want} found")
        folder = entries[0]
    return folder


def _validate(kind: str, folder: Path, archive: Path) -> None:
    """Check unpacked content before it is moved into place."""
    if kind == "images":
        missing = [f"s{s}" for s in range(1, NUM_SESSIONS + 1) if not (folder / f"s{s}").is_dir()]
        if missing:
            raise DownloadError(f"{archive}: the images lack session folders {', '.join(missing)}")
    elif kind == "filelists":
        from .nicv2 import load_scenario

        for scenario in SCENARIOS:
            try:
                load_scenario(folder, scenario, 0)
            except FilelistError as exc:
                detail = str(exc).replace(f"{folder}{os.sep}", "")   # the temporary folder goes away
                raise DownloadError(f"{archive}: filelists unusable ({detail})") from None


def _move_into_place(content: Path, target: Path) -> None:
    """Replace ``target`` by ``content`` with one rename (an old target is renamed away first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(content, target)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


def unpack(src: Source, archive: Path, root: Path, *, progress: bool = True) -> Path:
    """Unpack a verified zip into ``root / src.target`` through a temporary folder; returns the target."""
    target = root / src.target
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive}: not a zip archive ({exc})") from None
    with zf:
        check_members(zf, archive)
        infos = [zf.getinfo(src.member)] if src.member else zf.infolist()
        _check_space(root, sum(i.file_size for i in infos), f"unpack {archive.name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{src.name}-unpack-", dir=target.parent))
        try:
            try:
                _extract(zf, infos, tmp, progress)
            except OSError as exc:
                raise _io_error(tmp, exc, "unpack") from None
            if src.member:
                content = tmp.joinpath(*PurePosixPath(src.member).parts)
            else:
                content = _content_root(src.kind, tmp, archive)
                _validate(src.kind, content, archive)
            _move_into_place(content, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: unpacked %s into %s", src.name, archive.name, target)
    return target


# ------------------------------------------------------------------------------------------------
# presence, conversion, installation
# ------------------------------------------------------------------------------------------------
def _labels_ok(path: Path) -> bool:
    try:
        return tuple(ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()) \
            == CORE50_CLASS_NAMES
    except (OSError, UnicodeDecodeError):
        return False


def _present(src: Source, root: Path) -> bool:
    """Is the result of ``src`` complete? (Our own results appear with one rename, so never half-done.)"""
    target = root / src.target
    if src.kind == "labels":
        return _labels_ok(target)
    if src.kind == "images":
        return all((target / f"s{s}").is_dir() for s in range(1, NUM_SESSIONS + 1))
    if src.kind == "filelists":
        try:
            for scenario in SCENARIOS:
                find_scenario_dir(target, scenario, 0)
        except FilelistError:
            return False
        return True
    return target.is_file()


def convert(src: Source, root: Path) -> Path:
    """Import the raw weights of ``src`` into MobileNetV1 and save our checkpoint; returns its path."""
    from ..models.mobilenet_v1 import MobileNetV1
    from ..models.weights import import_pytorchcv, save_checkpoint

    raw, out = root / src.target, root / src.checkpoint
    sha1 = check_file(raw, ("sha1", src.sha1.lower())) if src.sha1 else _digest(raw, "sha1")
    model = MobileNetV1(num_classes=NUM_CLASSES)
    try:
        if src.weights_format == "pytorchcv":
            report, preprocessing = import_pytorchcv(model, raw), "imagenet"
        else:
            from ..models.caffemodel import import_caffemodel

            report, preprocessing = import_caffemodel(model, raw), "caffe"
    except ValueError as exc:
        raise DownloadError(f"{raw}: cannot convert ({exc})") from None
    try:
        save_checkpoint(out, model, source=f"{src.weights_format}:{raw.name}", preprocessing=preprocessing,
                        extra={"source_sha1": sha1, "import": report.to_dict()})
    except OSError as exc:
        raise _io_error(out, exc) from None
    return out


def install(src: Source, root: Path, *, optional: bool = False, force: bool = False, keep_archives: bool = False,
            retries: int = 3, timeout: float = 30.0, progress: bool = True) -> Outcome:
    """Make the result of one source present under ``root`` (see the module docstring).

    ``optional``: skip (with a note) instead of failing when the source has no URL and no copy is at hand.
    """
    target = root / src.target
    if not force and _present(src, root):
        if src.checkpoint and not (root / src.checkpoint).is_file():
            return Outcome(src.name, "converted", f"converted {target} into {convert(src, root)}")
        return Outcome(src.name, "present", f"{target} already present, nothing to do")
    if not force and target.exists():
        raise DownloadError(f"{target} exists but is incomplete or not what `download {src.item}` puts there; "
                            "move it away, or pass --force to replace it")
    if src.kind == "labels":
        try:
            path = fetch(src, root, retries=1, timeout=min(timeout, 10.0), progress=False)
            if not _labels_ok(path):
                raise ChecksumError(f"{path}: not the 50 CORe50 names; set aside as {_set_aside(path)}")
            _move_into_place(path, target)
            how = "downloaded"
        except DownloadError as exc:
            log.info("labels: %s; writing the 50 names known to the suite instead", exc)
            atomic_write_text(target, _LABELS_TEXT)
            how = "written from the class names"
        return Outcome(src.name, "installed", f"{target} {how}")
    if optional and not src.urls and not any(
            p.is_file() for p in (root / DOWNLOADS_DIR / src.filename, root / src.filename)):
        return Outcome(src.name, "skipped",
                       f"{src.filename} skipped: no known public source or checksum; to use it, put it in "
                       f"{root / WEIGHTS_DIR} by hand (from {src.page}) and run `latent-replay download "
                       f"{src.item} --root {root}`, or run `latent-replay download {src.item} --url URL [--sha1 HEX]`")
    archive = fetch(src, root, retries=retries, timeout=timeout, progress=progress)
    if src.archive == "zip":
        unpack(src, archive, root, progress=progress)
        if not keep_archives and archive.parent == root / DOWNLOADS_DIR:
            archive.unlink()
    else:
        _move_into_place(archive, target)
    msg = f"{src.filename} installed in {target}"
    if src.checkpoint:
        msg += f", converted into {convert(src, root)}"
    if src.checksum is None:
        msg += f"; sha1 {_digest(target, 'sha1')} (no published checksum: record it)"
    return Outcome(src.name, "installed", msg)


def _select(item: str, sources: Mapping[str, Source] | None) -> list[Source]:
    if item not in ITEMS:
        raise ValueError(f"unknown item {item!r}: expected one of {', '.join(ITEMS)}")
    sources = SOURCES if sources is None else sources
    return [sources[name] for name in ITEMS[item]]


def download(item: str, root: str | os.PathLike, *, urls: Sequence[str] = (), md5: str | None = None,
             sha1: str | None = None, force: bool = False, keep_archives: bool = False, retries: int = 3,
             timeout: float = 30.0, progress: bool = True,
             sources: Mapping[str, Source] | None = None) -> list[Outcome]:
    """Download, verify, unpack and convert the sources of ``item`` (``core50``, ``filelists``,
    ``weights``, ``caffe`` or ``all``) under ``root``.

    ``urls`` replace the URL list, ``md5``/``sha1`` the expected checksum, of the item's main source
    (not allowed with ``all``). Raises DownloadError with a one-line, actionable message.
    """
    root = Path(root).expanduser()
    selected = _select(item, sources)
    if urls or md5 or sha1:
        if item not in PRIMARY:
            raise ValueError(f"--url/--md5/--sha1 need a single item ({', '.join(PRIMARY)}), not {item!r}")
        changes: dict = {"urls": tuple(urls)} if urls else {}
        if md5 or sha1:
            changes.update(md5=md5, sha1=sha1)
        selected = [dataclasses.replace(s, **changes) if s.name == PRIMARY[item] else s for s in selected]
    if retries < 1:
        raise ValueError(f"--retries must be at least 1, got {retries}")
    _check_writable(root)
    return [install(s, root, optional=s.optional and PRIMARY.get(item) != s.name, force=force,
                    keep_archives=keep_archives, retries=retries, timeout=timeout, progress=progress)
            for s in selected]


# ------------------------------------------------------------------------------------------------
# verification of what is present
# ------------------------------------------------------------------------------------------------
def _check_images(root: Path) -> Check:
    from .core50 import DatasetError, open_root

    if not (root / IMAGES_DIR).exists():
        return Check("core50", "missing", f"{root / IMAGES_DIR}: not present")
    try:
        ds = open_root(root)
    except DatasetError as exc:
        return Check("core50", "bad", str(exc))
    frames, problems = 0, []
    for s in range(1, NUM_SESSIONS + 1):
        folder = ds.images_dir / f"s{s}"
        if not folder.is_dir():
            problems.append(f"s{s} missing")
            continue
        objects = [e for e in os.scandir(folder) if e.is_dir() and re.fullmatch(r"o\d+", e.name)]
        if len(objects) != NUM_CLASSES:
            problems.append(f"s{s} has {len(objects)} object folders, expected {NUM_CLASSES}")
        frames += sum(sum(1 for f in os.scandir(o.path) if f.name.endswith(".png")) for o in objects)
    if problems:
        return Check("core50", "bad", f"{ds.images_dir}: {'; '.join(problems[:3])}"
                                      + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))
    return Check("core50", "ok", f"{ds.images_dir}: {NUM_SESSIONS} sessions x {NUM_CLASSES} objects, "
                                 f"{frames} frames (the full release has {CORE50_FRAMES})")


def _check_filelists(root: Path) -> Check:
    from .core50 import DatasetError, open_root
    from .nicv2 import load_scenario

    folder = root / FILELISTS_DIR
    if not folder.is_dir():
        return Check("filelists", "missing", f"{folder}: not present")
    try:
        images_dir = open_root(root).images_dir
    except DatasetError:
        images_dir = None
    done = []
    try:
        for scenario in SCENARIOS:
            runs = [r for r in range(5) if r == 0 or any(
                (folder / p.format(s=scenario) / f"run{r}").is_dir() for p in SCENARIO_DIR_NAMES)]
            for run in runs:
                sc = load_scenario(folder, scenario, run, images_dir=images_dir)
            done.append(f"NICv2-{scenario} run{'s' if len(runs) > 1 else ''} {','.join(map(str, runs))} "
                        f"({len(sc)} batches)")
    except FilelistError as exc:
        return Check("filelists", "bad", str(exc))
    frames = "every frame found" if images_dir else "frames not checked (no dataset root)"
    return Check("filelists", "ok", f"{folder}: {', '.join(done)}; {frames}")


def _check_weights(src: Source, root: Path) -> Check:
    from ..models.weights import read_checkpoint

    raw, ckpt = root / src.target, root / src.checkpoint
    if not raw.is_file() and not ckpt.is_file():
        return Check(src.name, "note" if src.optional else "missing",
                     f"{raw}: not present" + (" (optional)" if src.optional else ""))
    details = []
    if raw.is_file():
        got = _digest(raw, "sha1")
        if src.sha1 and got != src.sha1.lower():
            return Check(src.name, "bad", f"{raw}: sha1 {got} does not match the expected {src.sha1}")
        details.append(f"{raw.name} sha1 {got} " + ("verified" if src.sha1 else "(no published checksum)"))
    if not ckpt.is_file():
        return Check(src.name, "bad", f"{ckpt}: checkpoint missing (run `latent-replay download {src.item}`)")
    try:
        meta = read_checkpoint(ckpt)["metadata"]
    except (ValueError, FileNotFoundError) as exc:
        return Check(src.name, "bad", str(exc))
    details.append(f"{ckpt.name} ok (preprocessing {meta.get('preprocessing')})")
    return Check(src.name, "ok", "; ".join(details))


def _check_downloads(src: Source, root: Path) -> list[Check]:
    """Kept or hand-placed archives (checksum, read-only), partial and set-aside files."""
    out = []
    for folder in (root / DOWNLOADS_DIR, root):
        path = folder / src.filename
        if path.is_file() and src.archive == "zip":
            if src.checksum is None:
                out.append(Check(src.name, "note", f"{path}: kept, no published checksum"))
                continue
            try:
                got = _digest(path, src.checksum[0], src.member)
            except (zipfile.BadZipFile, KeyError) as exc:
                got = f"unreadable ({exc})"
            ok = got == src.checksum[1]
            out.append(Check(src.name, "ok" if ok else "bad",
                             f"{path}: {src.checksum[0]} " + ("verified" if ok else f"{got} does not match "
                                                                               f"{src.checksum[1]}")))
        for suffix, what in ((".part", "partial download, the next call resumes it"),
                             (".corrupt", "failed its checksum, set aside (delete it)")):
            if (folder / (src.filename + suffix)).is_file():
                out.append(Check(src.name, "note", f"{folder / (src.filename + suffix)}: {what}"))
    return out


def verify(root: str | os.PathLike, item: str = "all", *, sources: Mapping[str, Source] | None = None) -> list[Check]:
    """Check what is present under ``root`` for ``item``; reads only, changes nothing."""
    root = Path(root).expanduser()
    checks: list[Check] = []
    for src in _select(item, sources):
        checks += _check_downloads(src, root)
        if src.kind == "labels":
            path = root / src.target
            status = "ok" if _labels_ok(path) else ("bad" if path.exists() else "missing")
            detail = {"ok": "the 50 CORe50 names", "bad": "not the 50 CORe50 names", "missing": "not present"}
            checks.append(Check(src.name, status, f"{path}: {detail[status]}"))
        elif src.kind == "images":
            checks.append(_check_images(root))
        elif src.kind == "filelists":
            checks.append(_check_filelists(root))
        else:
            checks.append(_check_weights(src, root))
    return checks
