"""The permuted and rotated digit streams of glr-bench (glr-spec §5-7; :func:`~latent_replay.data.digits.make_stream`)
as :class:`~latent_replay.streams.base.Stream`: domain-incremental, all 10 classes in every experience,
each experience with its own test set. Ids are row numbers into the stream's images: the training
images of every experience, then their test images."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.digits import N_CLASSES, DigitData, make_stream
from ..data.digits import Experience as DigitExperience
from ..registry import STREAMS
from .base import Experience


class DigitStream:
    """A digit stream: ``kind`` (permuted or rotated) of ``data``, ``n_experiences`` long."""

    n_classes = N_CLASSES
    #: Trained by glr-bench's loop (an MLP on flattened digits), not the main pipeline's.
    engine = False
    kind = ""

    def __init__(self, data: DigitData, *, n_experiences: int = 5, seed: int = 0, **options):
        self.data = data
        self.experiences: list[DigitExperience] = make_stream(data, self.kind, n_experiences=n_experiences,
                                                               seed=seed, **options)
        #: Every experience's train images, then every test set: row ``i`` of the stream is row
        #: ``i - starts[k]`` of ``parts[k]`` (kept as they are, not copied into one array).
        self._parts = [e.train_images for e in self.experiences] + [e.test_images for e in self.experiences]
        sizes = [len(p) for p in self._parts]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.input_shape = tuple(data.image_shape)
        ranges = [np.arange(a, b) for a, b in zip(self._starts[:-1], self._starts[1:])]
        labels = [e.train_labels for e in self.experiences] + [e.test_labels for e in self.experiences]
        experiences = [Experience(ids, y) for ids, y in zip(ranges, labels)]
        n = len(self.experiences)
        self.batches, self.test_sets = experiences[:n], experiences[n:]
        #: Every experience's test set together (the per-experience ones are :attr:`test_sets`).
        self.test = Experience(np.concatenate([t.ids for t in self.test_sets]),
                               np.concatenate([t.labels for t in self.test_sets]))

    @property
    def name(self) -> str:
        return f"digits_{self.kind}"

    def inputs(self, ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        part = np.searchsorted(self._starts, ids, side="right") - 1
        out = np.empty((len(ids), *self.input_shape), dtype=np.uint8)
        for k in np.unique(part):
            here = part == k
            out[here] = self._parts[k][ids[here] - self._starts[k]]
        return out


@STREAMS.register("digits_permuted", title="permuted digits", aliases=("permuted",), order=1)
class PermutedDigits(DigitStream):
    """Every experience a fixed pixel permutation of the digits (the first one too, by default)."""

    kind = "permuted"


@STREAMS.register("digits_rotated", title="rotated digits", aliases=("rotated",), order=2)
class RotatedDigits(DigitStream):
    """Experience k: the digits rotated by the k-th angle of ``ROTATIONS``."""

    kind = "rotated"
