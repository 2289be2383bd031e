"""CORe50 NICv2 (spec §3) as a :class:`~latent_replay.streams.base.Stream`: the batches and test list of
one scenario and run (:func:`~latent_replay.data.nicv2.load_scenario`), their frames read from the
decoded-frame cache (:class:`~latent_replay.data.core50.FrameStore`); ids are frame paths."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.classes import NUM_CLASSES
from ..data.core50 import FrameStore
from ..data.nicv2 import Scenario
from ..registry import STREAMS
from .base import Experience


@STREAMS.register("core50_nicv2", title="CORe50 NICv2", aliases=("nicv2",), order=0)
class NICv2Stream:
    """One run of a NICv2 scenario over a frame store holding its frames."""

    name = "core50_nicv2"
    n_classes = NUM_CLASSES   # CORe50's 50 objects
    #: The main pipeline's trainer runs on this stream (its network takes CORe50's frames).
    engine = True

    def __init__(self, scenario: Scenario, frames: FrameStore):
        self.scenario, self.frames = scenario, frames
        self.batches = [Experience(tuple(fl.paths), fl.labels) for fl in scenario.batches]
        self.test = Experience(tuple(scenario.test.paths), scenario.test.labels)
        self.input_shape = tuple(frames.images.shape[1:])

    def inputs(self, ids: Sequence[str]) -> np.ndarray:
        return self.frames.get(list(ids))

    @property
    def scratch_folder(self) -> Path | None:
        """Where temporary files of a run go best (beside the frame cache, on local disk), if anywhere."""
        return None if self.frames.cache_file is None else Path(self.frames.cache_file).parent
