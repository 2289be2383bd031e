"""Replay memories (spec §7): native frames, latent activations (float32/float16/uint8), and
generative latent replay (per-batch density models of the latents, glr-spec)."""
from .generative import GenerativeReplay
from .memory import STORAGE_DTYPES, ReplayMemory, choose_update, n_current

__all__ = ["STORAGE_DTYPES", "GenerativeReplay", "ReplayMemory", "choose_update", "n_current"]
