"""Replay memories (spec §7): native frames, latent activations (float32/float16/uint8), and
generative latent replay (per-batch density models of the latents, glr-spec); each owns its storage
and update rule behind one interface (:class:`~latent_replay.replay.base.Replay`), built by name."""
from __future__ import annotations

from .base import STORES, ExperienceData, Replay
from .generative import GenerativeReplay
from .memory import STORAGE_DTYPES, ReplayMemory, choose_update, n_current


def _frames(cfg, device, seed) -> ReplayMemory:
    return ReplayMemory(cfg.replay_memory, "uint8_frames", device)


def _latents(cfg, device, seed) -> ReplayMemory:
    return ReplayMemory(cfg.replay_memory, cfg.latent_dtype, device)


#: Replay name -> builder ``(cfg, device, seed) -> Replay``. ``none`` builds the memory the original
#: still mixes in without replay (``fidelity.replay_when_none``, B1).
REPLAY_BUILDERS = {"none": _frames, "native": _frames, "latent": _latents, "generative": GenerativeReplay.from_config}


def make_replay(cfg, device, seed: int = 0) -> Replay | None:
    """The replay memory of an experiment (ExperimentConfig), or None where it keeps none."""
    return REPLAY_BUILDERS[cfg.replay](cfg, device, seed) if cfg.memory_in_use else None


__all__ = ["REPLAY_BUILDERS", "STORAGE_DTYPES", "STORES", "ExperienceData", "GenerativeReplay", "Replay",
           "ReplayMemory", "choose_update", "make_replay", "n_current"]
