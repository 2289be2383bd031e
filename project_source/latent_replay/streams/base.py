"""The stream interface: a sequence of training experiences (batches) and a test set over a fixed set of
classes, whose rows are named by ids and read as uint8 inputs of one shape.

A stream keeps its inputs where they are (CORe50's frames in the frame cache, a digit stream's arrays in
memory): an experience holds only the ids of its rows and their labels, and :meth:`Stream.inputs` reads
the rows of any ids when a batch, a memory update or an evaluation needs them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Experience:
    """One training experience (a batch of the stream) or a test set: its rows' ids and labels (int64)."""

    ids: Sequence[Any]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@runtime_checkable
class Stream(Protocol):
    """What a trainer needs of a stream."""

    #: Its registered name (:data:`~latent_replay.registry.STREAMS`).
    name: str
    #: Classes 0..n_classes-1 the labels are drawn from (the classifier's outputs).
    n_classes: int
    #: The shape of one input row as :meth:`inputs` returns it (CORe50: 128 x 128 x 3).
    input_shape: tuple[int, ...]
    #: The training experiences, in order.
    batches: Sequence[Experience]
    #: The test set evaluated after every batch.
    test: Experience

    def inputs(self, ids: Sequence[Any]) -> np.ndarray:
        """The uint8 inputs of ``ids``, ``len(ids) x *input_shape``, in the order given."""
        ...
