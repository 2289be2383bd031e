"""The stream interface and its two implementations: CORe50 NICv2 (what the engine trains on) and the
digit streams (glr-bench's), listed by the STREAMS registry."""
from __future__ import annotations

import numpy as np
import pytest

from latent_replay.data.core50 import load_frames, open_root
from latent_replay.data.digits import load_digits_data, make_stream
from latent_replay.data.nicv2 import load_scenario
from latent_replay.registry import STREAMS
from latent_replay.streams import Experience, Stream
from latent_replay.streams.core50 import NICv2Stream
from latent_replay.streams.digits import PermutedDigits, RotatedDigits


def test_the_registry_lists_every_stream_with_its_aliases():
    assert STREAMS.names() == ("core50_nicv2", "digits_permuted", "digits_rotated")
    assert STREAMS.canonical("rotated") == "digits_rotated" and STREAMS.get("nicv2").obj is NICv2Stream
    assert [e.obj.engine for e in STREAMS] == [True, False, False]


def test_core50_nicv2_stream_reads_the_scenario_through_the_frame_store(tiny_nicv2):
    root = open_root(tiny_nicv2 / "core50")
    scenario = load_scenario(tiny_nicv2 / "lists", 391, 0, reduced_test=False, images_dir=root.images_dir)
    paths = {p for fl in (*scenario.batches, scenario.test) for p in fl.paths}
    frames = load_frames(root.images_dir, paths, cache_dir=tiny_nicv2 / "cache", progress=False)
    stream = NICv2Stream(scenario, frames)
    assert isinstance(stream, Stream) and stream.name == "core50_nicv2" and stream.n_classes == 50
    assert len(stream.batches) == len(scenario.batches) and stream.input_shape == frames.images.shape[1:]
    first = stream.batches[0]
    assert list(first.ids) == list(scenario.batches[0].paths) and np.array_equal(first.labels, scenario.batches[0].labels)
    x = stream.inputs(first.ids[:3])
    assert x.dtype == np.uint8 and x.shape == (3, *stream.input_shape)
    assert np.array_equal(x, frames.get(list(scenario.batches[0].paths[:3])))
    assert len(stream.test) == len(scenario.test) and stream.scratch_folder == frames.cache_file.parent


@pytest.mark.parametrize("cls, kind", [(PermutedDigits, "permuted"), (RotatedDigits, "rotated")])
def test_digit_streams_give_the_images_of_make_stream(cls, kind):
    data = load_digits_data()
    stream = cls(data, n_experiences=3, seed=4)
    reference = make_stream(data, kind, n_experiences=3, seed=4)
    assert isinstance(stream, Stream) and stream.name == f"digits_{kind}" and stream.n_classes == 10
    assert stream.input_shape == (8, 8) and len(stream.batches) == len(stream.test_sets) == 3
    for exp, train, test in zip(reference, stream.batches, stream.test_sets):
        assert np.array_equal(stream.inputs(train.ids), exp.train_images)
        assert np.array_equal(train.labels, exp.train_labels) and np.array_equal(test.labels, exp.test_labels)
        assert np.array_equal(stream.inputs(test.ids), exp.test_images)
    assert len(stream.test) == 3 * len(data.test_labels)
    assert np.array_equal(stream.inputs(stream.test.ids), np.concatenate([e.test_images for e in reference]))
    mixed = [stream.test_sets[2].ids[5], stream.batches[0].ids[7], stream.batches[1].ids[0]]   # any order
    assert np.array_equal(stream.inputs(mixed), np.stack([reference[2].test_images[5], reference[0].train_images[7],
                                                          reference[1].train_images[0]]))
    assert isinstance(stream.batches[0], Experience) and len(stream.batches[0]) == len(data.train_labels)
