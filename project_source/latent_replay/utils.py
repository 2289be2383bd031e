"""Small shared helpers: integer list parsing, named random streams, logging set-up, positional file I/O
and returning freed heap memory."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import logging
import os
import re

import numpy as np

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_int_list(text: str, *, name: str = "value") -> list[int]:
    """Parse ``"0-4"``, ``"0,2,4"`` or ``"0-2,7"`` into a sorted list of distinct integers.

    Raises ValueError with a one-line message naming ``name`` on anything else.
    """
    values: set[int] = set()
    for part in str(text).replace(" ", "").split(","):
        m = _RANGE.match(part)
        if not m:
            raise ValueError(f"{name}: {text!r} is not a list or range of integers (e.g. 0-4 or 0,2,4)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"{name}: range {part!r} is empty (start after end)")
        values.update(range(lo, hi + 1))
    return sorted(values)


def format_int_list(values) -> str:
    """The inverse of :func:`parse_int_list`: ``[0, 1, 2, 3, 7]`` -> ``"0-3,7"`` (sorted, distinct)."""
    values = sorted(set(int(v) for v in values))
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ",".join(parts)


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character (newline, tab, DEL, ...): such a value cannot go
    into a generated script or a one-line message as it is."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def stream_key(stream: str) -> int:
    """The fixed 32-bit number of a named random stream: the first four bytes of its name's SHA-256."""
    return int.from_bytes(hashlib.sha256(stream.encode("utf-8")).digest()[:4], "little")


def seeded_rng(seed: int, stream: str, *ids: int) -> np.random.Generator:
    """The numpy generator of the random stream named ``stream`` under ``seed`` (and ``ids``, e.g. a
    batch index): ``SeedSequence(seed, spawn_key=(stream_key(stream), *ids))``.

    Streams of other names or ids are independent of each other and of the plain
    ``default_rng([seed, k])`` streams. Those plain lists are not independent among themselves:
    SeedSequence pads its entropy with zeros to four words, so ``[seed, 0, 0]`` is ``[seed, 0]``, and
    ``[seed, 3]`` is whichever other use also picked 3. A spawn key is hashed in after the padded
    entropy, so neither can happen here."""
    key = (stream_key(stream), *(int(i) for i in ids))
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr with time, level and logger name."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        force=True)


def pread_into(fd: int, buffer: memoryview, pos: int, eof_message: str) -> None:
    """Fill ``buffer`` from ``fd`` at byte ``pos`` (``preadv``, repeated after short reads); OSError
    with ``eof_message`` where the file ends first."""
    while buffer.nbytes:
        n = os.preadv(fd, [buffer], pos)
        if n <= 0:
            raise OSError(eof_message)
        buffer, pos = buffer[n:], pos + n


def pwrite_all(fd: int, buffer: memoryview, pos: int) -> None:
    """Write all of ``buffer`` to ``fd`` at byte ``pos`` (``pwritev``, repeated after short writes)."""
    while buffer.nbytes:
        n = os.pwritev(fd, [buffer], pos)
        buffer, pos = buffer[n:], pos + n


@functools.lru_cache(maxsize=None)
def libc_function(name: str):
    """The C library's function ``name`` (ctypes, looked up once), or None where it has none (e.g.
    glibc's ``malloc_trim`` and ``mallinfo2`` outside glibc)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name, None)
    except OSError:
        return None


def release_free_memory() -> bool:
    """Give the heap memory that is free right now back to the kernel (glibc ``malloc_trim(0)``).

    The suite runs with ``GLIBC_TUNABLES`` set so that glibc keeps freed blocks instead of returning
    them after every minibatch (which roughly halves CPU speed through page faults). The price is that
    a process keeps the high-water mark of its heap: batch 0's whole-network activations stay resident
    through every incremental batch. Calling this at the few points where a large working set has just
    been freed (the end of batch 0, after the test-latent pass) returns it once. Returns False where
    the C library has no ``malloc_trim`` (not glibc), True otherwise.
    """
    trim = libc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def configure_cuda(reproducible: bool) -> None:
    """Process-wide CUDA numerics (``ExperimentConfig.cuda_reproducible``): IEEE float32 convolutions and
    matrix products and deterministic cuDNN algorithms, or TF32 and cuDNN's autotuner."""
    import torch

    precision = "ieee" if reproducible else "tf32"
    torch.backends.cudnn.conv.fp32_precision = precision
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.deterministic = reproducible
    torch.backends.cudnn.benchmark = not reproducible
