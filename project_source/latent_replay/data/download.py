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
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .archives import _move_into_place, check_members, unpack
from .classes import CORE50_CLASS_NAMES, IMAGES_DIR, NUM_CLASSES, NUM_SESSIONS
from .filelists import SCENARIO_DIR_NAMES, SCENARIOS, FilelistError, atomic_write_text, find_scenario_dir
from .sources import (
    _LABELS_TEXT, DOWNLOADS_DIR, FILELISTS_DIR, ITEMS, PRIMARY, SOURCES, WEIGHTS_DIR, ChecksumError, DownloadError,
    Source,
)
from .transfer import (
    CHUNK, RETRY_DELAY, USER_AGENT, _check_writable, _digest, _io_error, _set_aside, check_file, fetch,
)

__all__ = [
    "DOWNLOADS_DIR", "FILELISTS_DIR", "WEIGHTS_DIR", "CORE50_FRAMES", "CHUNK", "USER_AGENT", "RETRY_DELAY",
    "DownloadError", "ChecksumError", "Source", "SOURCES", "ITEMS", "PRIMARY", "Outcome", "Check",
    "check_file", "fetch", "check_members", "unpack", "convert", "install", "download", "verify",
]

log = logging.getLogger(__name__)

#: Frames in the full CORe50 128x128 release (reported by ``verify``).
CORE50_FRAMES = 164_866


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
