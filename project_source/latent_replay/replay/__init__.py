"""Replay memories (spec §7): native frames, latent activations (float32/float16/uint8), and
generative latent replay (per-batch density models of the latents, glr-spec); each owns its storage
and update rule behind one interface (:class:`~latent_replay.replay.base.Replay`), built by name."""
from __future__ import annotations

from ..registry import REPLAYS
from .base import STORES, ExperienceData, Replay
from .generative import GenerativeReplay
from .memory import STORAGE_DTYPES, ReplayMemory, choose_update, n_current


_MEMORY = (("memory", "replay_memory"),)
_LAYER = (("layer", "latent_layer"),)


@REPLAYS.register("none", title="no replay", aliases=("no",), keys=_MEMORY, order=0)
@REPLAYS.register("native", title="native replay", aliases=("pure",), keys=_MEMORY, order=1)
def _frames(cfg, device, seed) -> ReplayMemory:
    """uint8 frames; ``none`` builds the memory the original still mixes in without replay
    (``fidelity.replay_when_none``, B1)."""
    return ReplayMemory(cfg.replay_memory, "uint8_frames", device)


@REPLAYS.register("latent", title="latent replay", aliases=("latent",),
                  keys=(*_LAYER, *_MEMORY, ("dtype", "latent_dtype")), order=2)
def _latents(cfg, device, seed) -> ReplayMemory:
    return ReplayMemory(cfg.replay_memory, cfg.latent_dtype, device)


REPLAYS.register("generative", title="generative latent replay", aliases=("generative",),
                 keys=(*_LAYER, *_MEMORY, ("profile", "glr_profile"), ("settings", "glr")), order=3)(
    GenerativeReplay.from_config)


def make_replay(cfg, device, seed: int = 0) -> Replay | None:
    """The replay memory of an experiment (ExperimentConfig), built by its replay's registered builder
    (:data:`~latent_replay.registry.REPLAYS`), or None where it keeps none."""
    return REPLAYS.get(cfg.replay).obj(cfg, device, seed) if cfg.memory_in_use else None


__all__ = ["STORAGE_DTYPES", "STORES", "ExperienceData", "GenerativeReplay", "Replay",
           "ReplayMemory", "choose_update", "make_replay", "n_current"]
