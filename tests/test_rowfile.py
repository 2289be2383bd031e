"""RowFile: latents kept in an unnamed file and read back in ranges (issue #8, test_latents_in_file)."""
from __future__ import annotations

import pytest
import torch

from latent_replay.rowfile import RowFile


def _filled(rows, *, channels_last, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn((rows, 6, 3, 5), generator=g) * 50).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.bfloat16])
@pytest.mark.parametrize("size", [1, 4, 7, 100])
def test_rows_come_back_as_written(tmp_path, channels_last, dtype, size):
    x = _filled(23, channels_last=channels_last, dtype=dtype)
    f = RowFile(len(x), x[:5], tmp_path)
    for a in range(0, 23, 5):          # appended in other chunks than read
        f.append(x[a:a + 5])
    assert f.nbytes == x.numel() * x.element_size()
    parts = [c.clone() for c in f.chunks(size)]
    assert [len(p) for p in parts] == [min(size, 23 - a) for a in range(0, 23, size)]
    got = torch.cat(parts)
    assert got.dtype == dtype and torch.equal(got, x)
    # the chunks keep the memory layout the rows came in (the upper part runs channels-last)
    assert parts[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    f.close()


def test_chunks_share_one_buffer(tmp_path):
    x = _filled(10, channels_last=True)
    f = RowFile(10, x, tmp_path)
    f.append(x)
    pointers = [c.data_ptr() for c in f.chunks(4)]
    assert len(pointers) == 3 and len(set(pointers)) == 1


def test_the_file_has_no_name_and_closes(tmp_path):
    x = _filled(4, channels_last=False)
    f = RowFile(4, x, tmp_path / "scratch")       # the folder is made
    f.append(x)
    assert list((tmp_path / "scratch").iterdir()) == []
    f.close()
    f.close()                                     # twice is fine
    with pytest.raises(ValueError, match="closed file"):
        next(f.chunks(2))


def test_wrong_rows_are_refused(tmp_path):
    x = _filled(4, channels_last=False)
    f = RowFile(4, x, tmp_path)
    with pytest.raises(ValueError, match="shape"):
        f.append(x[:, :3])
    with pytest.raises(ValueError, match="float32"):
        f.append(x.double())
    f.append(x[:3])
    with pytest.raises(ValueError, match="3 of 4 rows written"):
        next(f.chunks(2))
    with pytest.raises(ValueError, match="5 rows written, this file keeps 4"):
        f.append(x[:2])
    with pytest.raises(ValueError, match="CPU"):
        RowFile(4, x.to("meta"), tmp_path)


def test_a_full_disk_fails_at_creation(tmp_path, monkeypatch):
    """The file's whole size is reserved when it is made: a full disk fails then, not half-way."""
    import errno

    import latent_replay.rowfile as rowfile

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rowfile.os, "posix_fallocate", full)
    with pytest.raises(OSError, match="No space left"):
        RowFile(4, _filled(4, channels_last=False), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_chunk_size_must_be_positive(tmp_path):
    x = _filled(3, channels_last=False)
    f = RowFile(3, x, tmp_path)
    f.append(x)
    with pytest.raises(ValueError, match="chunk size must be >= 1, got 0"):
        next(f.chunks(0))


def test_no_reservation_where_the_file_system_has_none(tmp_path, monkeypatch):
    import errno

    import latent_replay.rowfile as rowfile

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(rowfile.os, "posix_fallocate", unsupported)
    x = _filled(5, channels_last=True)
    f = RowFile(5, x, tmp_path)
    f.append(x)
    assert torch.equal(torch.cat([c.clone() for c in f.chunks(2)]), x)


def test_positional_io_helpers(tmp_path):
    """pread_into / pwrite_all (shared by the frame store and RowFile): whole buffers at an offset, and
    a one-line error naming what ended where the file is too short."""
    import os

    from latent_replay.utils import pread_into, pwrite_all

    fd = os.open(tmp_path / "f.bin", os.O_RDWR | os.O_CREAT)
    try:
        pwrite_all(fd, memoryview(b"0123456789"), 3)
        assert os.pread(fd, 13, 0) == b"\0\0\x000123456789"
        buf = bytearray(4)
        pread_into(fd, memoryview(buf), 5, "unused")
        assert buf == b"2345"
        with pytest.raises(OSError, match="^f.bin: file ends before row 7$"):
            pread_into(fd, memoryview(bytearray(8)), 9, "f.bin: file ends before row 7")
    finally:
        os.close(fd)
