"""The external replay memory (spec §7): one interface for native images and latent activations.

* ``native``: the memory stores uint8 frames (N, H, W, 3) and the trainer preprocesses them when they
  are replayed (preprocessing is deterministic, so this equals storing preprocessed images, at a
  quarter of float32's bytes);
* ``latent``: the memory stores activation volumes at the latent layer, as float32, float16 or uint8
  (per-channel affine quantisation: codes = round((x - lo_c) / scale_c), one lo/scale per channel for
  the whole memory; when a new insert widens a channel's range, the stored codes of that channel are
  re-quantised to the new range).

Update rule after batch ``b`` (spec §7.2): ``n_cur = min(M // (b+1), available)`` new patterns are
picked uniformly without replacement; ``n_keep = M - n_cur`` existing slots are kept, picked uniformly
without replacement (all of them while the memory is not yet full: the original crashed when M
exceeded the first batch, B4); memory = [new picks ; kept slots].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STORAGE_DTYPES = ("uint8_frames", "float32", "float16", "uint8")


def n_current(memory_size: int, batch_index: int, available: int) -> int:
    """How many patterns of batch ``batch_index`` enter the memory."""
    return min(memory_size // (batch_index + 1), available)


def choose_update(rng, memory_size: int, batch_index: int, available: int, stored: int) -> tuple[np.ndarray, np.ndarray]:
    """The update's random choices: (candidates to insert, stored slots to keep), both index arrays.

    ``rng`` is a numpy ``Generator`` or ``RandomState`` (both offer ``choice``).
    """
    n_cur = n_current(memory_size, batch_index, available)
    new = rng.choice(available, size=n_cur, replace=False)
    n_keep = min(memory_size - n_cur, stored)
    keep = rng.choice(stored, size=n_keep, replace=False) if n_keep > 0 else np.zeros(0, dtype=np.int64)
    return np.asarray(new, dtype=np.int64), np.asarray(keep, dtype=np.int64)


def move_rows_in_place(data: torch.Tensor, src: np.ndarray, start: int) -> None:
    """``data[start + i] = data[src[i]]`` for every ``i`` at once, in place (``src`` distinct).

    The moves form chains (a destination whose row nobody needs, filled from its source, whose slot
    is filled next, ...) and cycles (moved with one spare row each), so every row is copied once and
    the extra memory is one row, where gathering ``data[src]`` first would copy all of them."""
    dst_rows = {start + i: int(r) for i, r in enumerate(src)}     # destination -> source
    needed = set(dst_rows.values())
    done: set[int] = set()

    def follow(d: int, spare: torch.Tensor | None = None, first: int = -1) -> None:
        while d in dst_rows and d not in done:
            done.add(d)
            s = dst_rows[d]
            if s == first:
                data[d] = spare
                return
            if s != d:
                data[d] = data[s]
            d = s

    for d in dst_rows:                        # chains first: their start rows are free
        if d not in needed:
            follow(d)
    for d in dst_rows:                        # what is left are cycles
        if d not in done:
            follow(d, data[d].clone(), d)


@dataclass
class _Quant:
    lo: torch.Tensor      # per channel
    scale: torch.Tensor   # per channel


class ReplayMemory:
    """Fixed-capacity store of patterns (frames or latents) with integer labels.

    Args:
        capacity: M, the number of patterns kept.
        storage: ``uint8_frames`` (native replay), ``float32``, ``float16`` or ``uint8`` (latent).
        device: where the contents live (the training device).
    """

    def __init__(self, capacity: int, storage: str = "float32", device: torch.device | str = "cpu"):
        if capacity <= 0:
            raise ValueError(f"memory capacity must be > 0, got {capacity}")
        if storage not in STORAGE_DTYPES:
            raise ValueError(f"storage must be one of {', '.join(STORAGE_DTYPES)}, got {storage!r}")
        self.capacity = capacity
        self.storage = storage
        self.device = torch.device(device)
        self.data: torch.Tensor | None = None
        self.labels = torch.zeros(0, dtype=torch.long, device=self.device)
        self.quant: _Quant | None = None
        #: full-memory updates move rows inside the stored tensor (CPU: no second copy, faster);
        #: on a GPU one gather is faster than a kernel launch per row
        self.move_in_place = self.device.type == "cpu"

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def stores(self) -> str:
        """"frames" (native replay) or "latents" (:class:`~latent_replay.replay.base.Replay`)."""
        return "frames" if self.storage == "uint8_frames" else "latents"

    def after_experience(self, rng, data) -> None:
        """The update rule of spec §7.2 (:func:`choose_update`) on a finished experience's candidates
        (:class:`~latent_replay.replay.base.ExperienceData`): the picked ones' frames or latents first."""
        pick, keep = choose_update(rng, self.capacity, data.index, data.size, len(self))
        patterns = data.frames(pick) if self.stores == "frames" else data.latents(pick)
        self.insert(patterns, data.labels(pick), keep)

    # ------------------------------------------------------------------ contents
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.storage == "uint8_frames":
            if x.dtype != torch.uint8:
                raise ValueError(f"native memory stores uint8 frames, got {x.dtype}")
            return x
        if self.storage == "float32":
            return x.float()
        if self.storage == "float16":
            return x.half()
        if len(x) == 0:   # nothing enters the memory (M < b + 1): no range to quantise to
            return torch.zeros(x.shape, dtype=torch.uint8, device=x.device)
        return self._quantise(x.float())

    def _quantise(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        lo, hi = x.amin(dim=dims), x.amax(dim=dims)
        if self.quant is not None:
            old = self.quant
            lo, hi = torch.minimum(lo, old.lo), torch.maximum(hi, old.lo + 255.0 * old.scale)
        scale = torch.clamp((hi - lo) / 255.0, min=1e-12)
        if self.quant is not None and self.data is not None and len(self):
            changed = not (torch.equal(lo, self.quant.lo) and torch.equal(scale, self.quant.scale))
            if changed:  # re-quantise what is stored to the widened range
                stored = self._decode(self.data)
                self.quant = _Quant(lo, scale)
                self.data = self._codes(stored)
        self.quant = _Quant(lo, scale)
        return self._codes(x)

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quant
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.round((x - q.lo.view(shape)) / q.scale.view(shape)).clamp_(0, 255).to(torch.uint8)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        if self.storage == "uint8":
            q = self.quant
            shape = (1, -1) + (1,) * (codes.dim() - 2)
            return codes.float() * q.scale.view(shape) + q.lo.view(shape)
        if self.storage == "float16":
            return codes.float()
        return codes

    def get(self, index: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(patterns, labels) at ``index``: frames as uint8, latents decoded to float32."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.device)
        return self._decode(self.data[idx]), self.labels[idx]

    def insert(self, patterns: torch.Tensor, labels: torch.Tensor, keep: np.ndarray) -> None:
        """memory = [patterns ; stored[keep]] (the chosen new patterns first, as in the original)."""
        new = self._encode(patterns.to(self.device))
        new_labels = labels.to(self.device, torch.long)
        if self.data is None or len(self) == 0:
            self.data, self.labels = new.clone(), new_labels.clone()
            return
        k = torch.as_tensor(keep, dtype=torch.long, device=self.device)
        n = len(new) + len(k)
        if len(self.data) >= n and self.move_in_place:
            # the memory is full: move the kept rows to their new slots inside the stored tensor (no
            # copy of the kept rows, which would be most of the memory again; 16 ms instead of 63 ms
            # for 1,350 latents at conv5_4/dw), then write the new rows
            move_rows_in_place(self.data, np.asarray(keep, dtype=np.int64), len(new))
            buf = self.data[:n]
        else:
            kept = self.data[k]
            buf = self.data[:n] if len(self.data) >= n else self.data.new_empty((n,) + tuple(self.data.shape[1:]))
            buf[len(new):] = kept
            del kept
        buf[:len(new)] = new
        self.data = buf
        self.labels = torch.cat([new_labels, self.labels[k]])

    # ------------------------------------------------------------------ accounting and state
    @property
    def nbytes(self) -> int:
        """Bytes kept between batches: patterns, labels and quantisation parameters."""
        if self.data is None:
            return 0
        n = self.data.numel() * self.data.element_size() + self.labels.numel() * 8
        if self.quant is not None:
            n += (self.quant.lo.numel() + self.quant.scale.numel()) * 4
        return int(n)

    def state_dict(self) -> dict:
        return {
            "capacity": self.capacity, "storage": self.storage,
            "data": None if self.data is None else self.data.cpu(),
            "labels": self.labels.cpu(),
            "quant": None if self.quant is None else (self.quant.lo.cpu(), self.quant.scale.cpu()),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity or state["storage"] != self.storage:
            raise ValueError("checkpointed memory does not match the configuration "
                             f"({state['capacity']} {state['storage']} vs {self.capacity} {self.storage})")
        self.data = None if state["data"] is None else state["data"].to(self.device)
        self.labels = state["labels"].to(self.device)
        self.quant = None if state["quant"] is None else _Quant(*(t.to(self.device) for t in state["quant"]))
