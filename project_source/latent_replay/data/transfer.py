"""Getting one source's file: HTTP with retries and resume of partial files, checksums, and the
one-line errors for local file-system problems (disk full, permissions).

:func:`fetch` is the entry point; :func:`_urlopen` is the one place that opens a URL (tests patch it
here, in this module). See :mod:`.download` for the layout and the guarantees.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from .sources import DOWNLOADS_DIR, ChecksumError, DownloadError, Source

#: Logs under the name it always had (``latent_replay.data.download``), before the split.
log = logging.getLogger("latent_replay.data.download")

CHUNK = 1 << 20
USER_AGENT = "latent-replay-downloader/1"
#: Seconds to wait before retrying a cut transfer (times the attempt number).
RETRY_DELAY = 2.0


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

