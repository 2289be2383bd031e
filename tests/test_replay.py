"""Replay memory: update-rule counts per batch, partial fill, storage dtypes and byte accounting."""
from __future__ import annotations

import os
import numpy as np
import pytest
import torch

from latent_replay.replay import ReplayMemory, choose_update, n_current
from latent_replay.replay.memory import move_rows_in_place


def _fill(memory, batches, patterns_per_batch, shape=(4, 2, 2), seed=0):
    rng = np.random.default_rng(seed)
    for b in range(batches):
        x = torch.rand(patterns_per_batch, *shape) + b
        y = torch.full((patterns_per_batch,), b)
        new, keep = choose_update(rng, memory.capacity, b, patterns_per_batch, len(memory))
        memory.insert(x[new], y[new], keep)
        yield b, new, keep


def test_counts_per_batch_follow_m_over_b_plus_1():
    m = ReplayMemory(1500, "float32")
    for b, new, keep in _fill(m, 6, 300):
        assert len(new) == min(1500 // (b + 1), 300)
        counts = np.bincount(m.labels.numpy(), minlength=6)
        assert counts[b] == len(new)  # exactly n_cur patterns of the current batch
        assert len(m) == min(1500, 300 * (b + 1))  # partial fill until full (B4), then M
    # after 6 batches of 300 with M = 1500: newest 250, the rest spread over older batches
    assert counts[5] == 250 and counts.sum() == 1500
    assert n_current(1500, 0, 3072) == 1500 and n_current(1500, 9, 300) == 150


def test_memory_is_new_first_then_kept_slots():
    m = ReplayMemory(4, "float32")
    m.insert(torch.arange(4.0).view(4, 1), torch.tensor([0, 0, 0, 0]), np.zeros(0, np.int64))
    m.insert(torch.tensor([[9.0]]), torch.tensor([1]), np.array([3, 0, 2]))
    assert m.data.view(-1).tolist() == [9.0, 3.0, 0.0, 2.0] and m.labels.tolist() == [1, 0, 0, 0]


def test_rows_move_in_place_like_a_gather():
    """move_rows_in_place equals data[start:] = data[src] computed from a copy, for random partial
    permutations (chains, cycles, fixed rows), and the memory update built on it keeps the values of
    the concatenation [new ; stored[keep]] batch after batch."""
    rng = np.random.default_rng(1)
    for trial in range(200):
        n = int(rng.integers(1, 30))
        start = int(rng.integers(0, n + 1))
        src = rng.choice(n, size=n - start, replace=False)
        data = torch.arange(n * 3.0).view(n, 3)
        want = data.clone()
        want[start:] = data[torch.as_tensor(src)]
        move_rows_in_place(data, src, start)
        assert torch.equal(data[start:], want[start:]), (n, start, src)
    # identity and a pure cycle
    data = torch.arange(5.0).view(5, 1)
    move_rows_in_place(data, np.array([1, 2, 3, 4, 0]), 0)
    assert data.view(-1).tolist() == [1.0, 2.0, 3.0, 4.0, 0.0]
    for in_place in (True, False):   # the CPU's row moves and the GPU's gather give the same memory
        m, stored, gen = ReplayMemory(50, "float32"), torch.zeros(0, 4, 2, 2), np.random.default_rng(3)
        m.move_in_place = in_place
        for b in range(8):
            x = torch.rand(20, 4, 2, 2) + b
            new, keep = choose_update(gen, m.capacity, b, 20, len(m))
            m.insert(x[new], torch.full((20,), b)[new], keep)
            stored = torch.cat([x[new], stored[torch.as_tensor(keep, dtype=torch.long)]])
            assert torch.equal(m.data, stored) and len(m) == min(50, 20 * (b + 1))


@pytest.mark.parametrize("storage", ["float32", "float16", "uint8"])
def test_update_with_no_new_pattern_keeps_the_stored_ones(storage):
    """Once b + 1 > M no new pattern enters (n_current = 0): the memory keeps its rows, for every dtype."""
    m = ReplayMemory(3, storage)
    m.insert(torch.rand(3, 4, 2, 2), torch.tensor([0, 1, 2]), np.zeros(0, np.int64))
    before = m.get(np.arange(3))[0]
    assert n_current(3, 3, 300) == 0
    m.insert(torch.rand(0, 4, 2, 2), torch.zeros(0, dtype=torch.long), np.array([2, 0, 1]))
    assert m.labels.tolist() == [2, 0, 1] and torch.equal(m.get(np.arange(3))[0], before[[2, 0, 1]])


@pytest.mark.parametrize("storage, bytes_per_value", [("float32", 4), ("float16", 2), ("uint8", 1)])
def test_storage_dtypes_and_bytes(storage, bytes_per_value):
    m = ReplayMemory(40, storage)
    list(_fill(m, 3, 20))
    x, y = m.get(np.arange(len(m)))
    assert x.dtype == torch.float32 and x.shape == (40, 4, 2, 2)
    values = 40 * 16
    extra = 2 * 4 * 4 if storage == "uint8" else 0  # per-channel lo and scale
    assert m.nbytes == values * bytes_per_value + 40 * 8 + extra


def test_uint8_quantisation_error_and_range_growth():
    torch.manual_seed(0)
    m = ReplayMemory(8, "uint8")
    a = torch.rand(4, 3, 5, 5)
    m.insert(a, torch.zeros(4, dtype=torch.long), np.zeros(0, np.int64))
    got, _ = m.get(np.arange(4))
    step = (a.amax(dim=(0, 2, 3)) - a.amin(dim=(0, 2, 3))) / 255
    assert torch.all((got - a).abs() <= step.view(1, 3, 1, 1) / 2 + 1e-6)
    b = torch.rand(4, 3, 5, 5) * 10  # a wider range: stored codes are re-quantised
    m.insert(b, torch.ones(4, dtype=torch.long), np.arange(4))
    got, labels = m.get(np.arange(8))
    wide = 10.0 / 255
    assert labels.tolist() == [1] * 4 + [0] * 4
    assert torch.all((got[:4] - b).abs() <= wide / 2 + 1e-5)
    assert torch.all((got[4:] - a).abs() <= wide + 1e-5)


def test_native_memory_keeps_uint8_frames_and_state_round_trip():
    m = ReplayMemory(3, "uint8_frames")
    frames = torch.randint(0, 255, (5, 8, 8, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="native memory stores uint8 frames"):
        m.insert(frames.float(), torch.zeros(5, dtype=torch.long), np.zeros(0, np.int64))
    m.insert(frames[:3], torch.tensor([1, 2, 3]), np.zeros(0, np.int64))
    assert m.nbytes == 3 * 8 * 8 * 3 + 3 * 8
    other = ReplayMemory(3, "uint8_frames")
    other.load_state_dict(m.state_dict())
    assert torch.equal(other.data, frames[:3]) and other.labels.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="does not match the configuration"):
        ReplayMemory(4, "uint8_frames").load_state_dict(m.state_dict())


def _rss_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_release_free_memory_returns_freed_heap_to_the_kernel():
    """With the Makefile's allocator setting glibc keeps freed blocks; release_free_memory gives them back."""
    import subprocess
    import sys

    code = (
        "import torch, sys; sys.path.insert(0, 'tests'); from test_replay import _rss_bytes\n"
        "from latent_replay.utils import release_free_memory\n"
        "x = torch.ones(64 * 1024 * 1024); y = torch.ones(1); del x\n"
        "before = _rss_bytes(); ok = release_free_memory(); after = _rss_bytes()\n"
        "print(ok, before - after)\n")
    env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    ok, freed = out.stdout.split()
    assert ok == "True"
    assert int(freed) > 200 * 1024 * 1024     # the 256 MB tensor's pages, kept by glibc until the trim


def _experience(b, x, y, calls):
    """An ExperienceData over ``x``/``y`` that records what the replay asked for."""
    from latent_replay.replay import ExperienceData

    def take(what, data):
        def get(pick):
            calls.append((what, np.asarray(pick).tolist()))
            return data[torch.as_tensor(pick)]
        return get
    return ExperienceData(b, len(y), labels=take("labels", y), frames=take("frames", x), latents=take("latents", x))


@pytest.mark.parametrize("storage", ["uint8_frames", "float32", "uint8"])
def test_after_experience_is_the_update_rule_on_what_the_memory_stores(storage):
    """A replay takes its rows from the experience itself (frames or latents, never both), with the
    update rule's choices: the same memory as choose_update + insert."""
    from latent_replay.replay import Replay

    by_hand, plugged = ReplayMemory(20, storage), ReplayMemory(20, storage)
    assert isinstance(plugged, Replay) and plugged.stores == ("frames" if storage == "uint8_frames" else "latents")
    for b in range(3):
        g = torch.Generator().manual_seed(b)
        x = (torch.randint(0, 256, (15, 4, 4, 3), generator=g, dtype=torch.uint8) if storage == "uint8_frames"
             else torch.rand(15, 4, 2, 2, generator=g) + b)
        y = torch.arange(15) % 3 + b
        new, keep = choose_update(np.random.default_rng(b), 20, b, 15, len(by_hand))
        by_hand.insert(x[new], y[new], keep)
        calls = []
        plugged.after_experience(np.random.default_rng(b), _experience(b, x, y, calls))
        assert {what for what, _ in calls} == {"labels", plugged.stores}
        assert torch.equal(plugged.labels, by_hand.labels) and torch.equal(plugged.data, by_hand.data)


def test_generative_replay_learns_from_every_latent_of_the_experience():
    from latent_replay.replay import GenerativeReplay, Replay

    m = GenerativeReplay(30, seed=0)
    assert isinstance(m, Replay) and m.stores == "latents"
    x, y = torch.rand(40, 6) + 1, torch.arange(40) % 4
    calls = []
    m.after_experience(np.random.default_rng(0), _experience(0, x, y, calls))
    assert ("latents", list(range(40))) in calls and len(m) == 30 and set(m.labels.tolist()) <= {0, 1, 2, 3}


def test_make_replay_builds_the_experiments_memory():
    from latent_replay.config import ExperimentConfig
    from latent_replay.replay import GenerativeReplay, make_replay

    assert make_replay(ExperimentConfig(replay="none"), "cpu") is None
    assert make_replay(ExperimentConfig(replay="none", profile="caffe"), "cpu").stores == "frames"   # B1
    assert make_replay(ExperimentConfig(replay="native"), "cpu").storage == "uint8_frames"
    assert make_replay(ExperimentConfig(replay="latent", latent_dtype="float16"), "cpu").storage == "float16"
    glr = make_replay(ExperimentConfig(replay="generative", glr_profile="reference"), "cpu", seed=7)
    assert isinstance(glr, GenerativeReplay) and glr.mode == "joint" and glr.seed == 7 and glr.capacity == 1500
