"""The official CORe50 NICv2 filelists shipped in ``batch_filelists/``: their layout, the protocol facts
(spec §3.3-3.4), the generator reproducing what it can byte for byte, and their use as the default folder."""
from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from latent_replay.data.filelists import (
    FILELISTS_ENV, REDUCED_STEP, TEST_FULL, TEST_REDUCED, default_filelists_root, read_filelist,
    shipped_filelists_root,
)
from latent_replay.data.nicv2 import batch_file_name, inventory_from_paths, load_scenario, make_nicv2, write_nicv2

RUNS = range(5)
#: Scenario -> (batches, videos per later batch, last batch of run 0 that introduces a new class).
FACTS = {79: (79, 5, 68), 196: (196, 2, 164), 391: (391, 1, 340)}
TRAIN_FRAMES = 119_894
BATCH0_FRAMES = 2_999
TEST_FRAMES, REDUCED_FRAMES = 44_972, 2_249


@pytest.fixture(scope="module")
def scenarios(shipped_filelists):
    """Every shipped scenario run, read once with the suite's reader (which validates every line)."""
    return {(s, r): load_scenario(shipped_filelists, s, r) for s in FACTS for r in RUNS}


@pytest.fixture(scope="module")
def full_test(shipped_filelists):
    return read_filelist(shipped_filelists / TEST_FULL)


def _videos(fl) -> set:
    """The (session, object) videos of a filelist, as their folders ``s<S>/o<O>``."""
    return {p[:p.rindex("/")] for p in fl.paths}


def test_layout_is_exactly_the_suites(shipped_filelists):
    """NICv2_<S>/run<R>/train_batch_<XX>_filelist.txt for runs 0-4, both test lists at the root, a README."""
    expected = {"README.md", TEST_FULL, TEST_REDUCED}
    for s, (n, _, _) in FACTS.items():
        expected |= {f"NICv2_{s}/run{r}/{batch_file_name(b)}" for r in RUNS for b in range(n)}
    found = {p.relative_to(shipped_filelists).as_posix() for p in shipped_filelists.rglob("*") if p.is_file()}
    assert found == expected
    assert batch_file_name(99) == "train_batch_99_filelist.txt" and batch_file_name(100) == "train_batch_100_filelist.txt"


def test_batch_counts_frames_and_classes(scenarios, full_test):
    assert len(full_test) == TEST_FRAMES and full_test.classes == tuple(range(50))
    for (s, r), sc in scenarios.items():
        n, per, _ = FACTS[s]
        assert len(sc) == n, (s, r)
        assert sc.train_frames == TRAIN_FRAMES, (s, r)
        assert len(sc.test) == REDUCED_FRAMES
        assert set().union(*(b.classes for b in sc.batches)) == set(range(50)), (s, r)
        assert all(len(_videos(b)) == per for b in sc.batches[1:]), (s, r)
    for s in FACTS:   # no frame twice in a run, none both for training and testing
        assert dataclasses.replace(scenarios[s, 0], test=full_test).overlaps() == [], s


def test_batch_0_is_the_same_in_every_run_and_scenario(shipped_filelists, scenarios):
    first = (shipped_filelists / "NICv2_79" / "run0" / batch_file_name(0)).read_bytes()
    for s in FACTS:
        for r in RUNS:
            assert (shipped_filelists / f"NICv2_{s}" / f"run{r}" / batch_file_name(0)).read_bytes() == first, (s, r)
    batch0 = scenarios[391, 0].batches[0]
    assert len(batch0) == BATCH0_FRAMES and list(batch0.paths) == sorted(batch0.paths)
    assert _videos(batch0) == {f"s1/o{o}" for o in range(1, 51, 5)}   # session 1, one object per category


def test_391_runs_hold_the_same_videos_in_other_orders(scenarios):
    videos = [[min(_videos(b)) for b in scenarios[391, r].batches[1:]] for r in RUNS]
    assert all(sorted(v) == sorted(videos[0]) for v in videos) and len({tuple(v) for v in videos}) == len(videos)


@pytest.mark.parametrize("scenario", FACTS)
def test_last_batch_introducing_a_new_class_in_run_0(scenarios, scenario):
    rows = scenarios[scenario, 0].summary()
    assert max(r.index for r in rows if r.new_classes) == FACTS[scenario][2]


def test_reduced_test_list_is_every_20th_line_of_the_full_one(shipped_filelists, scenarios, full_test):
    full = (shipped_filelists / TEST_FULL).read_bytes()
    reduced = (shipped_filelists / TEST_REDUCED).read_bytes()
    assert full.count(b"\n") == TEST_FRAMES and b"\r" not in full
    # As CORe50 ships it, the reduced list has Windows line ends (every other list has Unix ones).
    assert reduced.count(b"\r\n") == reduced.count(b"\n") == REDUCED_FRAMES
    assert reduced.splitlines() == full.splitlines()[::REDUCED_STEP]
    assert scenarios[391, 0].test.paths == full_test.paths[::REDUCED_STEP]   # the default test list


def test_generator_reproduces_batch_0_and_the_test_lists_byte_for_byte(shipped_filelists, scenarios, full_test,
                                                                        tmp_path):
    """The generator on an inventory of the shipped frames writes the official batch 0 and test lists; its
    later batches hold the official videos (their order is CORe50's, not reproducible)."""
    inventory = inventory_from_paths([p for b in scenarios[391, 0].batches for p in b.paths] + list(full_test.paths))
    write_nicv2(tmp_path, inventory, scenarios=(79,), runs=(0,))
    ours = lambda name: (tmp_path / name).read_bytes()  # noqa: E731
    assert ours(f"NICv2_79/run0/{batch_file_name(0)}") == (shipped_filelists / "NICv2_79/run0" / batch_file_name(0)).read_bytes()
    assert ours(TEST_FULL) == (shipped_filelists / TEST_FULL).read_bytes()
    assert ours(TEST_REDUCED).replace(b"\n", b"\r\n") == (shipped_filelists / TEST_REDUCED).read_bytes()
    for s in FACTS:
        official, generated = scenarios[s, 0], make_nicv2(inventory, s, 0)
        assert len(generated) == len(official) and generated[0].paths == official.batches[0].paths
        assert sum(map(len, generated)) == TRAIN_FRAMES
        assert set().union(*map(_videos, generated)) == set().union(*map(_videos, official.batches))
        if s == 391:   # one video per batch: the same multiset of batch sizes
            assert Counter(map(len, generated)) == Counter(map(len, official.batches))


def test_the_shipped_lists_are_the_default_folder(shipped_filelists, tmp_path, monkeypatch):
    monkeypatch.delenv(FILELISTS_ENV, raising=False)
    assert shipped_filelists_root() == shipped_filelists == default_filelists_root()
    assert default_filelists_root(tmp_path) == shipped_filelists   # a dataset root without batch_filelists/


#: Iterations of one run with a 1,500-pattern memory, the original's count (ceil((n + M) / 128) per
#: epoch, 4 epochs; batch 0: 96), in both profiles.
ITERATIONS_M1500 = {79: 7_584, 196: 13_356, 391: 23_496}


@pytest.mark.parametrize("scenario", FACTS)
def test_full_minibatches_and_the_originals_iteration_count(scenarios, scenario):
    """On the shipped lists, runs 0-4, replay memory 1,500: the caffe and the fixed profile run the
    original's iterations; every minibatch holds exactly k_new new and k_mem memory rows; in the fixed
    profile every epoch visits every new pattern of its batch."""
    from latent_replay.train import plan_batch

    for r in RUNS:
        sizes = [len(b) for b in scenarios[scenario, r].batches]
        for pad in (True, False):
            perm = np.random.default_rng([r, pad]).permutation
            plans = [plan_batch(n, 1500 if b else 0, minibatch=128, epochs=4, pad=pad, count_memory=True, perm=perm)
                     for b, n in enumerate(sizes)]
            assert sum(p.iterations for p in plans) == ITERATIONS_M1500[scenario], (r, pad)
            for n, p in zip(sizes, plans):
                assert len(p.new_order) % p.k_new == 0 and len(p.mem_order) % max(p.k_mem, 1) == 0
                assert p.k_new + p.k_mem == 128 and p.iters_per_epoch >= p.new_chunks   # an epoch reaches every chunk
                if not pad:
                    assert set(p.new_order.tolist()) == set(range(n))
        first = plans[1]   # one fixed-profile batch checked row by row
        assert all(len(first.new_rows(i)) + len(first.mem_rows(i)) == 128 for i in range(first.iterations))
        epochs = [set(np.concatenate([first.new_rows(e * first.iters_per_epoch + i)
                                                       for i in range(first.iters_per_epoch)]).tolist())
                  for e in range(4)]
        assert all(seen == set(range(sizes[1])) for seen in epochs)
