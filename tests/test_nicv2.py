"""NICv2 generator structure, determinism and writing (the comparison with the official filelists:
test_shipped_filelists.py)."""
from __future__ import annotations

import pytest

from latent_replay.data.filelists import FilelistError, frame_path, parse_frame_path
from latent_replay.data.nicv2 import (
    inventory_from_paths, inventory_from_root, load_scenario, make_nicv2, make_test, write_nicv2,
)


def _videos(fl):
    return {parse_frame_path(p)[:2] for p in fl.paths}


@pytest.fixture(scope="module")
def full_inventory():
    """A complete 11 x 50 x 300 frame inventory (paths only)."""
    return inventory_from_paths(frame_path(s, o, f) for s in range(1, 12) for o in range(1, 51) for f in range(300))


@pytest.mark.parametrize("scenario, batches, per", [(79, 79, 5), (196, 196, 2), (391, 391, 1)])
def test_structure_on_full_inventory(full_inventory, scenario, batches, per):
    bs = make_nicv2(full_inventory, scenario, run=0)
    assert len(bs) == batches
    assert _videos(bs[0]) == {(1, o) for o in range(1, 51, 5)}
    assert list(bs[0].paths) == sorted(bs[0].paths) and len(bs[0]) == 3000
    assert all(len(_videos(b)) == per for b in bs[1:])
    assert all(len(b) == 300 * per for b in bs[1:])
    seen = [v for b in bs for v in _videos(b)]
    assert len(seen) == len(set(seen)) == 400  # every training video exactly once
    assert {s for s, _ in seen} == {1, 2, 4, 5, 6, 8, 9, 11}
    for b in bs[1:]:
        assert list(b.paths) != sorted(b.paths)  # shuffled within later batches
        assert b.labels.tolist() == [parse_frame_path(p)[1] - 1 for p in b.paths]


def test_determinism_and_run_dependence(full_inventory):
    a = make_nicv2(full_inventory, 391, run=3)
    b = make_nicv2(full_inventory, 391, run=3)
    c = make_nicv2(full_inventory, 391, run=4)
    assert [x.paths for x in a] == [x.paths for x in b]
    assert a[0].paths == c[0].paths  # batch 0 is identical in every run
    assert [_videos(x) for x in a[1:]] != [_videos(x) for x in c[1:]]
    assert make_nicv2(full_inventory, 391, run=3, seed=1)[1].paths != a[1].paths
    # the three scenarios of a run share the video order: NICv2-79 groups NICv2-391 by five
    order391 = [next(iter(_videos(x))) for x in a[1:]]
    g79 = make_nicv2(full_inventory, 79, run=3)
    assert [_videos(x) for x in g79[1:]] == [set(order391[i:i + 5]) for i in range(0, 390, 5)]


def test_test_list(full_inventory):
    t = make_test(full_inventory)
    assert len(t) == 3 * 50 * 300
    sessions = [parse_frame_path(p)[0] for p in t.paths]
    assert sessions == sorted(sessions, key=[3, 7, 10].index)
    assert t.paths[:2] == ("s3/o1/C_03_01_000.png", "s3/o1/C_03_01_001.png")
    assert t.paths[300] == "s3/o10/C_03_10_000.png"  # paths sorted as text within a session


def test_partial_dataset_and_errors():
    inv = inventory_from_paths(frame_path(s, o, f) for s in (1, 2, 3, 4) for o in (1, 2, 6) for f in range(2))
    bs = make_nicv2(inv, 79, 0)
    # batch 0 = s1 of objects 1 and 6; later videos: s1/o2 + s2, s4 x 3 objects = 7 -> 5 + 2
    assert _videos(bs[0]) == {(1, 1), (1, 6)}
    assert [len(_videos(b)) for b in bs[1:]] == [5, 2]
    with pytest.raises(FilelistError, match="cannot build batch 0"):
        make_nicv2(inventory_from_paths([frame_path(2, 1, 0)]), 391, 0)
    with pytest.raises(FilelistError, match="no frames of the test sessions"):
        make_test(inventory_from_paths([frame_path(1, 1, 0)]))


def test_write_and_load_round_trip(tiny_root, tmp_path):
    images = tiny_root / "core50_128x128"
    inv = inventory_from_root(images)
    out = tmp_path / "lists"
    write_nicv2(out, inv, scenarios=(79, 391), runs=(0, 1))
    assert sorted(p.name for p in out.iterdir()) == ["NICv2_391", "NICv2_79", "test_filelist.txt", "test_filelist_20.txt"]
    sc = load_scenario(out, 391, 1, images_dir=images)
    assert [b.paths for b in sc.batches] == [b.paths for b in make_nicv2(inv, 391, 1)]
    assert (out / "NICv2_391" / "run0" / "train_batch_00_filelist.txt").is_file()
    full = load_scenario(out, 79, 0, reduced_test=False)
    assert full.test.paths == make_test(inv).paths and sc.test.paths == full.test.paths[::20]
    with pytest.raises(FileExistsError, match="NICv2_79 already exists"):
        write_nicv2(out, inv, scenarios=(79,), runs=(0,))
    before = (out / "NICv2_79" / "run1").is_dir()
    write_nicv2(out, inv, scenarios=(79,), runs=(0,), overwrite=True)
    assert before and not (out / "NICv2_79" / "run1").exists()  # replaced whole, no stale runs
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_replacing_lists_that_cannot_all_be_moved_keeps_every_old_one(tiny_root, tmp_path, monkeypatch):
    """--force with one old scenario that cannot be moved aside: nothing is replaced, not even the others."""
    import os

    from latent_replay.data import nicv2

    inv = inventory_from_root(tiny_root / "core50_128x128")
    out = tmp_path / "lists"
    write_nicv2(out, inv, scenarios=(79, 196), runs=(0,), seed=1)
    old = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.txt")}
    real = os.replace

    def failing(src, dst):
        if str(src) == str(out / "NICv2_196"):
            raise PermissionError(13, "Permission denied", str(src))
        return real(src, dst)

    monkeypatch.setattr(nicv2.os, "replace", failing)
    with pytest.raises(PermissionError):
        write_nicv2(out, inv, scenarios=(79, 196), runs=(0,), seed=7, overwrite=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.txt")} == old
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_summary(tiny_root, tmp_path):
    inv = inventory_from_root(tiny_root / "core50_128x128")
    write_nicv2(tmp_path, inv, scenarios=(391,), runs=(0,))
    rows = load_scenario(tmp_path, 391, 0).summary()
    assert rows[0].classes == (0, 5, 10) and rows[0].new_classes == (0, 5, 10) and rows[0].frames == 9
    seen = set(rows[0].classes)
    for r in rows[1:]:
        assert set(r.new_classes) == set(r.classes) - seen
        seen |= set(r.classes)
    assert seen == {0, 1, 5, 10}
