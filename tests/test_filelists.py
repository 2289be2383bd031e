"""Filelist reader/writer, validation errors and scenario-folder discovery."""
from __future__ import annotations

import numpy as np
import pytest

from latent_replay.data.filelists import (
    Filelist, FilelistError, PathIndex, batch_files, find_scenario_dir, frame_path, parse_frame_path,
    read_filelist, read_test_list, write_filelist,
)
from latent_replay.data.nicv2 import load_scenario
from latent_replay.utils import parse_int_list


def test_round_trip(tmp_path):
    paths = [frame_path(1, 1, 0), frame_path(2, 50, 299), frame_path(11, 7, 5)]
    write_filelist(tmp_path / "l.txt", paths, [0, 49, 6])
    assert (tmp_path / "l.txt").read_text() == "s1/o1/C_01_01_000.png 0\ns2/o50/C_02_50_299.png 49\ns11/o7/C_11_07_005.png 6\n"
    fl = read_filelist(tmp_path / "l.txt")
    assert fl.paths == tuple(paths)
    assert fl.labels.tolist() == [0, 49, 6]
    assert fl.lines == (1, 2, 3)
    assert fl.classes == (0, 6, 49)


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text("s1/o1/C_01_01_000.png 0\n\n  \ns1/o2/C_01_02_000.png 1\n")
    fl = read_filelist(f)
    assert len(fl) == 2 and fl.lines == (1, 4)
    assert fl.where(1) == f"{f}:4"


@pytest.mark.parametrize("line, message", [
    ("s1/o1/C_01_01_000.png", "malformed line"),
    ("s1/o1/C_01_01_000.png 0 extra", "malformed line"),
    ("s1/o1/C_01_01_000.png zero", "label 'zero' is not an integer"),
    ("s1/o1/C_01_01_000.png 50", "label 50 outside 0..49"),
    ("s1/o1/C_01_01_000.png -1", "label -1 outside 0..49"),
    ("s1/o1/C_01_01_000.png 3", "label 3 disagrees with object folder o1 (expected 0)"),
    ("s1/o1/C_01_02_000.png 0", "is not a CORe50 frame"),
    ("images/a.png 0", "is not a CORe50 frame"),
])
def test_validation_errors_name_file_and_line(tmp_path, line, message):
    f = tmp_path / "bad.txt"
    f.write_text("s1/o1/C_01_01_000.png 0\n" + line + "\n")
    with pytest.raises(FilelistError) as err:
        read_filelist(f)
    text = str(err.value)
    assert text.startswith(f"{f}:2: ")
    assert message in text
    assert "\n" not in text


def test_empty_and_missing_filelist(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(FilelistError, match=r"empty.txt: empty filelist"):
        read_filelist(tmp_path / "empty.txt")
    with pytest.raises(FilelistError, match=r"nope.txt: filelist not found"):
        read_filelist(tmp_path / "nope.txt")


def test_parse_frame_path():
    assert parse_frame_path("s11/o50/C_11_50_299.png") == (11, 50, 299)
    assert parse_frame_path("s1/o1/C_02_01_000.png") is None  # folder and name disagree
    assert parse_frame_path("s1/o1/C_01_01_000.jpg") is None


def test_missing_frame_reported_with_line(tiny_root, tmp_path):
    f = tmp_path / "l.txt"
    f.write_text("s1/o1/C_01_01_000.png 0\ns1/o1/C_01_01_099.png 0\ns9/o3/C_09_03_000.png 2\n")
    with pytest.raises(FilelistError) as err:
        PathIndex(tiny_root / "core50_128x128").check(read_filelist(f))
    assert str(err.value).startswith(f"{f}:2: s1/o1/C_01_01_099.png does not exist under")
    assert "(2 of 3 frames missing)" in str(err.value)


def _write_layout(base, folder, pad=2, batches=3, test_here="root"):
    run = base / folder / "run0"
    for b in range(batches):
        write_filelist(run / f"train_batch_{b:0{pad}d}_filelist.txt", [frame_path(1, b + 1, 0)], [b])
    test_dir = {"root": base, "run": run}[test_here]
    write_filelist(test_dir / "test_filelist.txt", [frame_path(3, 1, i) for i in range(45)], [0] * 45)
    return run


@pytest.mark.parametrize("folder", ["NICv2_391", "NIC_v2_391", "sIII_v2_391"])
@pytest.mark.parametrize("pad", [2, 3])
def test_all_namings_and_paddings(tmp_path, folder, pad):
    run = _write_layout(tmp_path, folder, pad=pad)
    assert find_scenario_dir(tmp_path, 391, 0) == run
    assert [p.name for p in batch_files(run)] == [f"train_batch_{b:0{pad}d}_filelist.txt" for b in range(3)]
    sc = load_scenario(tmp_path, 391, 0)
    assert len(sc) == 3 and [b.labels.tolist() for b in sc.batches] == [[0], [1], [2]]
    # only the full test list exists: the reduced one is derived (every 20th line)
    assert sc.test.paths == tuple(frame_path(3, 1, i) for i in (0, 20, 40))
    assert len(load_scenario(tmp_path, 391, 0, reduced_test=False).test) == 45


def test_test_list_in_run_folder_and_reduced_preferred(tmp_path):
    run = _write_layout(tmp_path, "NIC_v2_79", test_here="run")
    assert len(read_test_list(tmp_path, run)) == 3
    write_filelist(tmp_path / "test_filelist_20.txt", [frame_path(7, 2, 0)], [1])
    # the run folder is searched first for each name, and the reduced name comes first
    assert read_test_list(tmp_path, run).paths == (frame_path(7, 2, 0),)


def test_layout_errors(tmp_path):
    with pytest.raises(FilelistError, match="no folder for NICv2-79 run 0"):
        find_scenario_dir(tmp_path, 79, 0)
    run = _write_layout(tmp_path, "NICv2_79", batches=4)
    (run / "train_batch_02_filelist.txt").unlink()
    with pytest.raises(FilelistError, match="missing batch 2"):
        batch_files(run)
    write_filelist(run / "train_batch_002_filelist.txt", [frame_path(1, 3, 0)], [2])
    write_filelist(run / "train_batch_02_filelist.txt", [frame_path(1, 3, 0)], [2])
    with pytest.raises(FilelistError, match="batch 2 appears twice"):
        batch_files(run)
    with pytest.raises(FilelistError, match="scenario must be one of 79, 196, 391"):
        load_scenario(tmp_path, 80, 0)


def test_filelist_every_keeps_lines():
    fl = Filelist(tuple(frame_path(3, 1, i) for i in range(5)), np.zeros(5, dtype=np.int64), "x", (1, 2, 3, 4, 5))
    assert fl.every(2).lines == (1, 3, 5)


def test_parse_int_list():
    assert parse_int_list("0-4") == [0, 1, 2, 3, 4]
    assert parse_int_list("3,1,1") == [1, 3]
    assert parse_int_list("0-1, 7") == [0, 1, 7]
    with pytest.raises(ValueError, match="--runs: 'a' is not a list or range"):
        parse_int_list("a", name="--runs")
    with pytest.raises(ValueError, match="empty"):
        parse_int_list("4-2")


def test_written_files_get_normal_permissions(tmp_path):
    import os
    write_filelist(tmp_path / "l.txt", [frame_path(1, 1, 0)], [0])
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "l.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_format_int_list_inverts_parse_int_list():
    from latent_replay.utils import format_int_list

    assert format_int_list([7, 0, 1, 2, 3, 3]) == "0-3,7"
    assert format_int_list([4]) == "4" and format_int_list([]) == ""
    for text in ("0-4", "0,2,4", "0-2,7", "1,3-5,9-10"):
        assert format_int_list(parse_int_list(text)) == text


def test_default_filelists_root(tmp_path, monkeypatch):
    """The checkout's batch_filelists/ (found from the package's own path), $LATENT_REPLAY_FILELISTS first,
    a dataset root's batch_filelists/ before both; one line naming what is missing."""
    from conftest import SHIPPED_FILELISTS

    from latent_replay.data import filelists as F

    monkeypatch.delenv(F.FILELISTS_ENV, raising=False)
    assert F.shipped_filelists_root() == SHIPPED_FILELISTS == F.default_filelists_root(tmp_path)
    (tmp_path / "db" / "batch_filelists").mkdir(parents=True)
    assert F.default_filelists_root(tmp_path / "db") == tmp_path / "db" / "batch_filelists"
    monkeypatch.setenv(F.FILELISTS_ENV, str(tmp_path / "db" / "batch_filelists"))   # an installed copy (Docker)
    monkeypatch.setattr(F, "_CHECKOUT", tmp_path / "lib")
    assert F.default_filelists_root() == tmp_path / "db" / "batch_filelists"
    monkeypatch.setenv(F.FILELISTS_ENV, str(tmp_path / "none"))
    with pytest.raises(FilelistError, match=rf"^LATENT_REPLAY_FILELISTS={tmp_path}/none: not a folder"):
        F.default_filelists_root()
    monkeypatch.delenv(F.FILELISTS_ENV)
    with pytest.raises(FilelistError, match=rf"^no shipped filelists: {tmp_path}/lib/batch_filelists does not exist"):
        F.default_filelists_root()
