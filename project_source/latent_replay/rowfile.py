"""Rows of one tensor shape kept in an unnamed temporary file instead of the process's heap.

The CPU trainer keeps the cached test latents here (``test_latents_in_file``): they are written once,
while the lower part is frozen, and read back in order at every evaluation with ``preadv``. The pages
then live in the kernel's page cache, not in the trainer's resident set: 295 MB at conv5_4/dw for the
2,249-frame test list at 128x128. On a disk-backed file system the kernel can write them back and drop
them under memory pressure; on tmpfs they are shared memory, which it can only swap.
"""

from __future__ import annotations

import errno
import math
import os
import tempfile
import weakref
from pathlib import Path
from typing import Iterator

import torch

from .utils import pread_into, pwrite_all


#: posix_fallocate errors that mean "this file system cannot reserve space": the file is then used
#: without a reservation (a full disk shows at the first write that does not fit).
_NO_RESERVATION = {errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}


def _bytes(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy."""
    return memoryview(t.view(-1).view(torch.uint8).numpy()).cast("B")


class RowFile:
    """``n`` rows shaped like ``template[0]`` (its dtype and memory layout), appended in order with
    :meth:`append` and read back in ranges with :meth:`chunks`. The file has no name (``O_TMPFILE``
    where the file system has it): it disappears when closed or when the process ends."""

    def __init__(self, n: int, template: torch.Tensor, directory: str | os.PathLike):
        if template.device.type != "cpu":
            raise ValueError(f"RowFile keeps CPU tensors, got one on {template.device}")
        self.n, self.shape, self.dtype = n, tuple(template.shape[1:]), template.dtype
        # rows are stored in their memory order: NHWC for a channels-last tensor, as given otherwise
        self.channels_last = (template.dim() == 4 and not template.is_contiguous()
                              and template.is_contiguous(memory_format=torch.channels_last))
        self.row_bytes = math.prod(self.shape) * template.element_size()
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=directory, prefix=".latents-", buffering=0)
        self._close = weakref.finalize(self, self._file.close)   # closed with the object at the latest
        if self.nbytes and hasattr(os, "posix_fallocate"):   # not on macOS
            try:   # the whole size now: a full disk fails here, not half-way through the writes
                os.posix_fallocate(self._file.fileno(), 0, self.nbytes)
            except OSError as exc:
                if exc.errno not in _NO_RESERVATION:
                    self.close()
                    raise
        self.written = 0

    @property
    def nbytes(self) -> int:
        return self.n * self.row_bytes

    def _stored(self, rows: torch.Tensor) -> torch.Tensor:
        return (rows.permute(0, 2, 3, 1) if self.channels_last else rows).contiguous()

    def append(self, rows: torch.Tensor) -> None:
        """Write the next ``len(rows)`` rows."""
        if tuple(rows.shape[1:]) != self.shape or rows.dtype != self.dtype:
            raise ValueError(f"rows of shape {tuple(rows.shape[1:])} / {rows.dtype}, this file keeps "
                             f"{self.shape} / {self.dtype}")
        if self.written + len(rows) > self.n:
            raise ValueError(f"{self.written + len(rows)} rows written, this file keeps {self.n}")
        pwrite_all(self._file.fileno(), _bytes(self._stored(rows.detach().cpu())), self.written * self.row_bytes)
        self.written += len(rows)

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """All rows in order, ``size`` at a time, each chunk read into one reused buffer: a chunk is
        valid until the next one is read."""
        if self.written != self.n:
            raise ValueError(f"{self.written} of {self.n} rows written")
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        layout = (size, *self.shape)
        if self.channels_last:
            c, h, w = self.shape
            layout = (size, h, w, c)
        buffer = torch.empty(layout, dtype=self.dtype)
        for start in range(0, self.n, size):
            part = buffer[:min(size, self.n - start)]
            pread_into(self._file.fileno(), _bytes(part), start * self.row_bytes,
                       f"latent file ends before row {start + len(part) - 1}")
            yield part.permute(0, 3, 1, 2) if self.channels_last else part

    def close(self) -> None:
        self._close()
