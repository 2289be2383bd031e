"""Replay memories (spec §7): native frames, latent activations (float32/float16/uint8)."""
from .memory import STORAGE_DTYPES, ReplayMemory, choose_update, n_current

__all__ = ["STORAGE_DTYPES", "ReplayMemory", "choose_update", "n_current"]
