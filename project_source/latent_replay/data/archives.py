"""Safe unpacking of a verified zip: member checks (no absolute paths, no ``..``, no links), extraction
into a temporary folder next to the target, validation of the content, then one rename into place.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Sequence

from tqdm.auto import tqdm

from .classes import NUM_SESSIONS
from .filelists import SCENARIO_DIR_NAMES, SCENARIOS, FilelistError
from .sources import DownloadError, Source
from .transfer import CHUNK, _check_space, _io_error

#: Logs under the name it always had (``latent_replay.data.download``), before the split.
log = logging.getLogger("latent_replay.data.download")


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

