"""What a replay is to the engine: the :class:`Replay` protocol and the :class:`ExperienceData` it learns from.

A replay owns its storage and its update rule (in the style of Avalanche's ``ReplayPlugin`` with a
storage policy): after each experience (a NICv2 batch) the engine hands it an :class:`ExperienceData`,
from which it takes what it keeps (frames, latents at the memory layer, labels), and during the next
experiences it returns rows for the minibatches. The engine never asks which replay it has; it only
reads :attr:`Replay.stores` to know whether the rows are frames (fed to the whole network) or latents
(fed to the part above the memory layer). Implementations: :class:`~latent_replay.replay.memory.ReplayMemory`
(native frames; latent float32/float16/uint8) and :class:`~latent_replay.replay.generative.GenerativeReplay`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch

#: What a replay's rows are: uint8 frames or activations at the memory layer.
STORES = ("frames", "latents")


@dataclass(frozen=True)
class ExperienceData:
    """A finished experience as a replay sees it: ``size`` candidate patterns (positions 0..size-1), and
    for an index array ``pick`` of them their ``labels``, their uint8 ``frames`` and their ``latents`` at
    the memory layer (computed on demand, as the fidelity switches say: spec §11 B11)."""

    index: int
    size: int
    labels: Callable[[np.ndarray], torch.Tensor]
    frames: Callable[[np.ndarray], torch.Tensor]
    latents: Callable[[np.ndarray], torch.Tensor]


@runtime_checkable
class Replay(Protocol):
    """The engine's view of a replay memory."""

    #: "frames" or "latents" (:data:`STORES`).
    stores: str
    #: M, the number of (virtual) patterns kept.
    capacity: int

    def __len__(self) -> int:
        """Patterns held now."""

    @property
    def labels(self) -> torch.Tensor:
        """The labels of the held patterns, int64 on the training device."""

    def get(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, labels) at ``index`` for a minibatch."""

    def after_experience(self, rng, data: ExperienceData) -> None:
        """Update from a finished experience; ``rng`` makes the random choices (numpy Generator or
        RandomState)."""

    @property
    def nbytes(self) -> int:
        """Bytes kept between experiences."""

    def state_dict(self) -> dict:
        ...

    def load_state_dict(self, state: dict) -> None:
        ...
